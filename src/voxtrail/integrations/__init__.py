"""Ready-made instrumentation of TTS engines: :mod:`voxtrail.integrations.indextts` (IndexTTS2)."""

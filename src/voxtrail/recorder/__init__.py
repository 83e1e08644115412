"""Capture inside a TTS service: ``Recorder`` spools events locally and ships them in the background.

Modules: :mod:`~voxtrail.recorder.core` (the Recorder), :mod:`~voxtrail.recorder.spool` (framed,
crash-safe segment files), :mod:`~voxtrail.recorder.shipper` (the background thread),
:mod:`~voxtrail.recorder.transports` / ``http`` / ``redis`` (destinations),
:mod:`~voxtrail.recorder.generation` (one generation end to end) and
:mod:`~voxtrail.recorder.logging` (a ``logging.Handler``). docs/recorder.md is the user's guide.
"""

from voxtrail.recorder.core import Recorder
from voxtrail.recorder.generation import Generation, current_generation

__all__ = ["Recorder", "Generation", "current_generation"]

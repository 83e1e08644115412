"""voxtrail: observability and audit trail for self-hosted text-to-speech services."""

__version__ = "0.1.0"

__all__ = ["Recorder", "__version__"]


def __getattr__(name: str):
    # Lazy: ``import voxtrail`` (the CLI's first step) must not pay for the recorder's imports.
    if name == "Recorder":
        from voxtrail.recorder import Recorder

        return Recorder
    raise AttributeError(f"module 'voxtrail' has no attribute {name!r}")

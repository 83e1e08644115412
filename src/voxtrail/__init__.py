"""voxtrail: observability and audit trail for self-hosted text-to-speech services."""

__version__ = "0.1.0"

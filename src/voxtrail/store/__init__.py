"""Storage of events: one schema on SQLite, PostgreSQL and MySQL/MariaDB (SQLAlchemy Core).

``Store.open(url)`` connects and migrates; ``Store.write(batch, checkpoint)`` is the only write
path, idempotent and atomic, with a bulk strategy per dialect behind it.
"""

from voxtrail.store.api import Store, WriteResult
from voxtrail.store.checkpoints import Checkpoint
from voxtrail.store.engine import DEFAULT_URL, StoreError, normalize_url
from voxtrail.store.schema import import_checkpoints, metadata, tts_events, tts_rejects

__all__ = [
    "DEFAULT_URL", "Checkpoint", "Store", "StoreError", "WriteResult", "import_checkpoints",
    "metadata", "normalize_url", "tts_events", "tts_rejects",
]

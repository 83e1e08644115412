"""Field encryption as the store applies it: which fields, with which keys, loaded when needed.

Encryption runs in ``Store.encode`` after the row hashes are computed (they cover plaintext, so
a key rotation leaves the chain valid) and before the bulk writer sees the batch. Keys are
loaded on the first batch that has something to encrypt; if none exist anywhere, the default
key file is created (voxtrail.keys says where, and warns once).
"""

from __future__ import annotations

import threading

import polars as pl

from voxtrail import config
from voxtrail.store.bulk import PreparedBatch


class Protection:
    def __init__(self, settings: config.Settings) -> None:
        from voxtrail.keys import encrypted_fields

        self.settings = settings
        self.fields: tuple[str, ...] = encrypted_fields(settings)
        self._keyring = None
        self._lock = threading.Lock()

    def keyring(self, create: bool = False):
        with self._lock:
            if self._keyring is None:
                from voxtrail.keys import Keyring

                self._keyring = Keyring.load(self.settings, create_default=create)
            return self._keyring

    def encrypt(self, prepared: PreparedBatch) -> PreparedBatch:
        present = [f for f in self.fields if f in prepared.frame.columns or prepared.constants.get(f) is not None]
        if not present:
            return prepared
        frame, constants = prepared.frame, dict(prepared.constants)
        # A constant would be one ciphertext for every row, but each row binds its ciphertext to
        # its request_id: such fields become columns.
        moved = {f: constants.pop(f) for f in present if f in constants}
        if moved:
            frame = frame.with_columns(pl.lit(v, dtype=pl.Utf8).alias(f) for f, v in moved.items())
        if not any(frame[f].null_count() < frame.height for f in present):
            return PreparedBatch(frame, constants)
        from voxtrail.transforms.encrypt import encrypt_frame

        keyring = self.keyring(create=True)
        frame = encrypt_frame(frame, keyring, present)
        order = [c for c in _field_order() if c in frame.columns]
        return PreparedBatch(frame.select(order), constants)


def _field_order() -> tuple[str, ...]:
    from voxtrail.event import FIELD_NAMES

    return FIELD_NAMES

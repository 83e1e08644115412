"""Where the shipper sends spooled events: a database, an HTTP collector, or a Redis stream.

A transport's ``prepare(batch)`` does the CPU work (in the shipper thread) and ``deliver(prepared)``
the I/O (in the delivery thread, overlapping the next ``prepare``). ``deliver`` either delivers
the whole batch (returning what happened) or raises :class:`Retry`: the shipper keeps the events
spooled and tries again later with backoff. :class:`Retry` means an *outage* (the destination is
down, overloaded, unauthorised), never a bad value: an event the destination will never take is
quarantined, not retried. The store turns such events into rejects (``tts_rejects``) itself; the
HTTP transport sets those its server refuses (a 4xx naming the event) aside in ``rejected/``
(:func:`set_aside`, :mod:`voxtrail.recorder.http`); and an event on which a transport fails in
an unexpected way, time after time, is isolated and set aside there by the shipper. So a batch
can never block the spool forever, and nothing is dropped silently.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import orjson

from voxtrail.event import EventBatch, Reject
from voxtrail.recorder.columnar import fast_batch
from voxtrail.recorder.spool import ensure_private_dir

log = logging.getLogger("voxtrail.recorder")


class Retry(Exception):
    """The destination cannot take the batch now (down, overloaded, unauthorised): try again later."""


@dataclass
class SpoolBatch:
    """Consecutive frames of one segment: the raw payloads and where each frame starts.

    ``stream_id`` names the segment (sub-spool + segment number) so that, with the offsets,
    a reject stored twice (the batch re-shipped after a crash) is stored once.
    """

    stream_id: str
    offsets: list[int]
    payloads: list[bytes]


@dataclass
class Delivered:
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    notes: list[str] = field(default_factory=list)


class Transport(Protocol):
    name: str

    def prepare(self, batch: SpoolBatch) -> Any: ...

    def deliver(self, prepared: Any) -> Delivered: ...

    def close(self) -> None: ...


def set_aside(spool_dir: Path, payloads: list[bytes], reason: str) -> Path:
    """Keep events no destination will take, with the reason, where an operator can inspect and
    re-send them: ``<spool_dir>/rejected/rejected-YYYYMMDD.ndjson``, one JSON object a line
    (``rejected_at``, ``reason``, ``event``), fsynced before the spool forgets them."""
    rejected_dir = spool_dir / "rejected"
    ensure_private_dir(rejected_dir)
    now = datetime.now(timezone.utc)
    path = rejected_dir / f"rejected-{now:%Y%m%d}.ndjson"
    lines = b"".join(orjson.dumps({"rejected_at": now.isoformat(), "reason": reason, "event": _fragment(p)}) + b"\n"
                     for p in payloads)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, lines)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _fragment(payload: bytes):
    """A payload as it is when it is JSON, else as text (a line of the file stays one JSON object)."""
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode("utf-8", "backslashreplace")
    return orjson.Fragment(payload)


def decode(batch: SpoolBatch) -> tuple[list, list[Reject]]:
    """Payloads -> objects; a payload that is not JSON (it passed its CRC, so this would be a
    bug, not a torn write) becomes a reject rather than stopping the spool."""
    try:
        return orjson.loads(b"[" + b",".join(batch.payloads) + b"]"), []
    except orjson.JSONDecodeError:
        # Some payload is bad: decode one by one to find it and keep all the others.
        return _decode_each(batch)


def _decode_each(batch: SpoolBatch) -> tuple[list, list[Reject]]:
    objs, rejects = [], []
    for offset, payload in zip(batch.offsets, batch.payloads):
        try:
            objs.append(orjson.loads(payload))
        except orjson.JSONDecodeError as exc:
            objs.append(None)
            rejects.append(Reject(offset, f"recorder: undecodable spool record: {exc}", payload[:200]))
    return objs, rejects


def to_event_batch(objs: list, offsets: list[int], source: str, chain=None) -> EventBatch:
    """Objects -> a batch through the shared mapping (contract A) and the transforms ``chain``
    (default: :func:`voxtrail.transforms.default_chain`)."""
    from voxtrail.sources.records import batch_from_objects
    from voxtrail.transforms import apply, default_chain

    keep = [i for i, o in enumerate(objs) if o is not None]
    if len(keep) < len(objs):
        objs, offsets = [objs[i] for i in keep], [offsets[i] for i in keep]
    batch = batch_from_objects(objs, source=source, on_invalid="reject", offsets=offsets)
    if batch.frame.height == 0 and "source" in batch.frame.columns:
        # An all-rejects batch: EventBatch.empty() carries a source column that clashes with the
        # constant; no event, so no columns are needed.
        batch.frame = batch.frame.drop("source")
    return apply(default_chain() if chain is None else chain, batch)


class DatabaseTransport:
    """Writes batches with ``Store.write``: one idempotent transaction per batch.

    ``prepare`` also validates and encodes the batch for the store (``Store.encode``: the
    rollup increments, SQLite's scratch file), so the delivery thread only runs the
    transaction while the shipper thread gets the next batch ready.
    """

    name = "database"

    def __init__(self, url: str, chain=None):
        self.url = url
        self.chain = chain  # the Recorder's transforms (its masker); None: default_chain()
        self._store = None
        # prepare (shipper thread) and close (delivery thread, after a failure) never overlap:
        # a store must not be closed while it is encoding a batch.
        self._lock = threading.Lock()

    def _open(self):
        from voxtrail.config import ConfigError
        from voxtrail.store import Store, StoreError

        if self._store is None:
            try:
                self._store = Store.open(self.url)
            except (StoreError, ConfigError) as exc:  # down, or a setting to fix: events wait
                raise Retry(str(exc)) from exc
        return self._store

    def prepare(self, batch: SpoolBatch) -> tuple[Any, Any, str]:
        from voxtrail.store import StoreError

        events = fast_batch(b"\n".join(batch.payloads), "recorder", self.chain)
        if events is None:
            objs, bad = decode(batch)
            events = to_event_batch(objs, batch.offsets, "recorder", self.chain)
            events.rejects = bad + events.rejects
        with self._lock:
            store = self._open()
            try:
                return store, store.encode(events), batch.stream_id
            except StoreError as exc:
                raise Retry(str(exc)) from exc

    def deliver(self, prepared: tuple[Any, Any, str]) -> Delivered:
        from voxtrail.store import StoreError

        store, encoded, stream_id = prepared
        if store is not self._store:  # closed after a failure since: prepare the batch again
            raise Retry("the store was reopened; the batch is prepared again")
        try:
            result = store.write(encoded, stream_id=stream_id)
        except StoreError as exc:
            self.close()  # reconnect from scratch next time (the server may have restarted)
            raise Retry(str(exc)) from exc
        return Delivered(result.inserted, result.duplicates, result.rejected)

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception as exc:  # noqa: BLE001 - a dead connection cannot be closed cleanly
                log.debug("voxtrail: closing the store: %s", exc)

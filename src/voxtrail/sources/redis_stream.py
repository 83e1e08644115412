"""Redis stream -> store: the source behind ``voxtrail collect``.

Any number of collectors share a consumer group. Each reads entries (XREADGROUP), writes their
events in one ``Store.write`` transaction, and acknowledges (XACK, then XDEL: the stream is a
queue, not an archive) only after the commit. A collector killed mid-batch leaves its entries
pending; another collector claims them once they have been idle for ``claim_idle`` seconds
(XAUTOCLAIM) and writes them again: events already stored are skipped by ``request_id``,
rejects by their (stream, entry id) key, so nothing is lost and nothing stored twice. A
collector restarted under the same consumer name first re-reads its own pending entries.

An entry's ``events`` field holds NDJSON (one event object per line, written by
``Recorder(redis=...)``; other producers may XADD the same shape).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from voxtrail.event import EventBatch, Reject
from voxtrail.recorder.columnar import fast_batch
from voxtrail.recorder.transports import to_event_batch
from voxtrail.store import Store, StoreError
from voxtrail.transforms import default_chain

log = logging.getLogger("voxtrail.collect")

FIELD = b"events"
MAX_BACKOFF = 30.0


class RedisUnavailable(Exception):
    """Redis cannot be reached; the message is one line saying so."""


@dataclass
class CollectStats:
    entries: int = 0
    events: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    claimed: int = 0
    retries: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entry_offset(entry_id: bytes, index: int) -> int:
    """A stable number for event ``index`` of an entry, the key of its reject (unique per stream)."""
    ms, _, seq = entry_id.decode().partition("-")
    return int(ms) * 1_000_000 + int(seq or 0) * 1_000 + min(index, 999)


def _entry_excerpt(fields: dict | None) -> bytes:
    return orjson.dumps({k.decode(errors="replace"): v.decode(errors="replace")
                         for k, v in (fields or {}).items()})[:200]


def entries_to_batch(entries: list[tuple[bytes, dict]], chain=None):
    """Stream entries -> an EventBatch (source ``redis``) transformed by ``chain`` (default:
    ``default_chain()``); undecodable lines become rejects.

    Regular batches (what recorders write) are read column-wise in one go; any other goes
    object by object through the shared mapping, so each bad event is a reject with its reason.
    """
    if all(fields and FIELD in fields for _, fields in entries):
        fast = fast_batch(b"\n".join(fields[FIELD] for _, fields in entries), "redis", chain)
        if fast is not None:
            return fast
    objs: list[Any] = []
    offsets: list[int] = []
    bad: list[Reject] = []
    for entry_id, fields in entries:
        data = fields.get(FIELD) if fields else None
        if data is None:
            bad.append(Reject(_entry_offset(entry_id, 0), f"redis: entry {entry_id.decode()} has no 'events' field",
                              _entry_excerpt(fields)))
            continue
        for i, line in enumerate(data.split(b"\n")):
            if not line.strip():
                continue
            try:
                objs.append(orjson.loads(line))
                offsets.append(_entry_offset(entry_id, i))
            except orjson.JSONDecodeError as exc:
                bad.append(Reject(_entry_offset(entry_id, i), f"redis: invalid JSON: {exc}", line[:200]))
    batch = to_event_batch(objs, offsets, "redis", chain)
    batch.rejects = bad + batch.rejects
    return batch


class StreamCollector:
    def __init__(self, client, store: Store, *, stream: str, group: str, consumer: str, batch_size: int = 2000,
                 block_ms: int = 1000, claim_idle: float = 30.0, delete_acked: bool = True):
        import redis

        self._redis_errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
        self._response_error = redis.exceptions.ResponseError
        self.client = client
        self.store = store
        self.chain = default_chain(store.settings)  # masking as configured for this store
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle * 1000)
        self.delete_acked = delete_acked
        self.stats = CollectStats()
        self._claim_cursor = "0-0"
        self._own_pending_done = False

    def prepare(self) -> None:
        """Check Redis is reachable and the consumer group exists (created at the stream's start)."""
        try:
            self.client.ping()
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except self._response_error as exc:
            if "BUSYGROUP" not in str(exc):
                raise RedisUnavailable(f"Redis refused to create group {self.group!r} on {self.stream!r}: {exc}") from exc
        except self._redis_errors as exc:
            raise RedisUnavailable(f"cannot reach Redis: {exc}; check the URL and that the server is running") from exc

    def run(self, stop: threading.Event, until_empty: bool = False) -> CollectStats:
        """Collect until ``stop`` is set (or, with ``until_empty``, until nothing is left to do)."""
        backoff = 0.0
        while not stop.is_set():
            try:
                handled = self.step(stop)
                backoff = 0.0
            except (StoreError, *self._redis_errors) as exc:
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.2)
                self.stats.retries += 1
                log.warning("voxtrail collect: %s; retrying in %.1f s (entries stay pending)", exc, backoff)
                stop.wait(backoff)
                continue
            except self._response_error as exc:
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):  # not: stream deleted under us
                    raise RedisUnavailable(f"Redis refused a stream command on {self.stream!r}: {exc}") from exc
                log.warning("voxtrail collect: the stream or group was deleted; creating them again")
                self.prepare()
                continue
            if until_empty and handled == 0 and self._nothing_pending():
                break
        return self.stats

    def step(self, stop: threading.Event | None = None) -> int:
        """One round: own pending entries (after a restart), claimable ones, then new ones."""
        if not self._own_pending_done:
            entries = self._read("0")
            if entries:
                return self._process(entries)
            self._own_pending_done = True
        claimed = self._claim()
        if claimed:
            self.stats.claimed += len(claimed)
            return self._process(claimed)
        entries = self._read(">")
        return self._process(entries) if entries else 0

    def _read(self, start: str) -> list:
        block = None if start == "0" else self.block_ms
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: start}, count=self.batch_size,
                                       block=block)
        if not reply:
            return []
        return [(eid, f) for eid, f in reply[0][1] if f is not None]  # None: deleted while pending

    def _claim(self) -> list:
        reply = self.client.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                       start_id=self._claim_cursor, count=self.batch_size)
        self._claim_cursor, entries = reply[0], reply[1]
        if isinstance(self._claim_cursor, bytes):
            self._claim_cursor = self._claim_cursor.decode()
        return [(eid, f) for eid, f in entries if f]

    def _process(self, entries: list) -> int:
        try:
            batch = entries_to_batch(entries, self.chain)
            result = self.store.write(batch, stream_id=f"redis:{self.stream}")
        except StoreError:
            raise  # an outage: run() retries with backoff, the entries stay pending
        except Exception as exc:  # noqa: BLE001 - not an outage: a value nothing above foresaw, or a bug
            if len(entries) > 1:
                log.exception("voxtrail collect: a batch of %d entries failed; taking them one by one", len(entries))
                return sum(self._process([entry]) for entry in entries)
            entry_id, fields = entries[0]
            log.exception("voxtrail collect: entry %s cannot be stored; kept in tts_rejects", entry_id.decode())
            batch = EventBatch.empty()
            batch.rejects = [Reject(_entry_offset(entry_id, 0), f"redis: entry {entry_id.decode()} could not be "
                                    f"stored: {type(exc).__name__}: {exc}", _entry_excerpt(fields))]
            result = self.store.write(batch, stream_id=f"redis:{self.stream}")
        ids = [eid for eid, _ in entries]
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, *ids)
        if self.delete_acked:
            pipe.xdel(self.stream, *ids)
        pipe.execute()
        s = self.stats
        s.entries += len(entries)
        s.events += batch.size + len(batch.rejects)
        s.inserted += result.inserted
        s.duplicates += result.duplicates
        s.rejected += result.rejected
        s.batches += 1
        return len(entries)

    def _nothing_pending(self) -> bool:
        summary = self.client.xpending(self.stream, self.group)
        return not summary or not summary.get("pending")


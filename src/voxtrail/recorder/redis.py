"""Redis Streams transport: spooled events become stream entries for ``voxtrail collect``.

Each entry holds up to ``per_entry`` events as NDJSON in its ``events`` field (the raw spool
payloads, not re-encoded); one pipeline of XADDs per shipped batch. Entries are appended with
no MAXLEN: trimming would drop events nobody has collected yet; the collectors delete what
they have acknowledged. A batch re-sent after a failure may add some entries twice; the store
keeps one copy (``request_id`` is unique).
"""

from __future__ import annotations

from voxtrail.recorder.transports import Delivered, Retry, SpoolBatch

#: Events per stream entry. One event per entry costs Redis ~10x more entries and round-trip
#: work for the same data (see bench/recorder_bench.py); 100 keeps entries small (~20-50 KB).
PER_ENTRY = 100
FIELD = b"events"


class RedisTransport:
    name = "redis"

    def __init__(self, url: str, stream: str, per_entry: int = PER_ENTRY):
        import redis

        self._errors = (redis.exceptions.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self.url = url
        self.stream = stream
        self.per_entry = per_entry

    def prepare(self, batch: SpoolBatch) -> SpoolBatch:
        return batch  # sent as spooled: nothing to prepare

    def deliver(self, batch: SpoolBatch) -> Delivered:
        payloads = batch.payloads
        try:
            pipe = self.client.pipeline(transaction=False)
            for i in range(0, len(payloads), self.per_entry):
                pipe.xadd(self.stream, {FIELD: b"\n".join(payloads[i: i + self.per_entry])})
            pipe.execute()
        except self._errors as exc:
            raise Retry(f"cannot append to Redis stream {self.stream!r}: {exc}") from exc
        return Delivered()

    def close(self) -> None:
        self.client.close()

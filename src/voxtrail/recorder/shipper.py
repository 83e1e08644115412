"""The shipper: a background thread that moves spooled events to their destination.

For each sub-spool it owns (its process's own, and any adopted from dead processes) it reads
frames after the acknowledged position, sends them as one batch, and only after the destination
has committed them saves the new position and deletes segments that are fully shipped. A crash
between the commit and the saved position re-sends that batch, which the store (idempotent on
``request_id``) and ``tts_rejects`` (keyed by segment and offset) absorb. While the destination
is down the batch is retried with exponential backoff, capped at ``max_backoff`` seconds.

Two stages overlap: while one batch is being written (a delivery thread: mostly database time)
the shipper thread reads and prepares the next (parsing, transforms). So a Drain has a *read*
position, ahead of its *acknowledged* one by at most the batch in flight; a failed delivery
rewinds reading to the acknowledged position.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from voxtrail.recorder.spool import AckFile, Chunk, SpoolWriter, SubSpool, read_frames, segment_name, segment_numbers
from voxtrail.recorder.stats import Stats
from voxtrail.recorder.transports import Retry, SpoolBatch, Transport, set_aside

log = logging.getLogger("voxtrail.recorder")

FIRST_BACKOFF = 0.1
#: Unexpected failures (not an outage: a transport raising something else than Retry) of the same
#: batch before the shipper isolates the event causing them: it halves the batch, and sets aside
#: (spool's rejected/) a single event that still fails. A data error never blocks the spool.
STRIKES = 3


class Drain:
    """Positions in one sub-spool. ``writer`` is set for the live (own) sub-spool."""

    def __init__(self, sub: SubSpool, writer: SpoolWriter | None, durable: bool, stats: Stats):
        self.sub = sub
        self.writer = writer
        self.stats = stats
        self.ack = AckFile(sub.path, durable)
        self.segment, self.offset = self.ack.load()  # acknowledged: everything before is stored
        if writer is not None:
            self.segment, self.offset = max((self.segment, self.offset), (writer.segment, 0))
        self.read = (self.segment, self.offset)
        #: finished segments read to their end -> where their valid frames end
        self.passed: dict[int, int] = {}

    def next_chunk(self, max_frames: int) -> Chunk | None:
        live = self.writer.position() if self.writer is not None else None
        read_seg, read_off = self.read
        for seg in segment_numbers(self.sub.path):
            if live is not None and seg > live[0]:
                break  # created after we looked at the writer: next time
            path = self.sub.path / segment_name(seg)
            if seg < self.segment:  # acknowledged; a crash came before its deletion
                self._delete(path)
                continue
            if seg < read_seg:
                continue
            is_live = live is not None and seg == live[0]
            chunk = read_frames(path, read_off if seg == read_seg else 0, live[1] if is_live else None, max_frames)
            if chunk.payloads:
                self.read = (seg, chunk.end)
                return chunk
            if is_live:
                return None
            if seg not in self.passed:
                self.passed[seg] = chunk.end
                if chunk.torn:
                    self.stats.add(torn_bytes=chunk.torn)
                    log.warning("voxtrail: %s ends with %d bytes of a torn record (a crash during a write); "
                                "they were not shipped", path, chunk.torn)
            read_seg, read_off = self.read = (seg + 1, 0)
            self._settle()
        return None

    def commit(self, chunk: Chunk) -> None:
        self.segment, self.offset = chunk.segment, chunk.end
        self.ack.save(self.segment, self.offset)
        self._settle()

    def rewind(self) -> None:
        """A delivery failed: read again from the acknowledged position."""
        self.read = (self.segment, self.offset)

    def _settle(self) -> None:
        """Move the acknowledged position past finished segments it covers entirely; delete them."""
        while self.segment in self.passed and self.offset >= self.passed[self.segment]:
            done = self.segment
            del self.passed[done]
            self.segment, self.offset = done + 1, 0
            self.ack.save(self.segment, self.offset)
            self._delete(self.sub.path / segment_name(done))

    def caught_up(self, target: tuple[int, int]) -> bool:
        return (self.segment, self.offset) >= target

    def empty(self) -> bool:
        return not segment_numbers(self.sub.path)

    def _delete(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            os.unlink(path)
        except FileNotFoundError:
            return
        if self.writer is not None:
            self.writer.forget(size)


class Shipper:
    def __init__(self, spool_dir: Path, own: Drain, transport: Transport, stats: Stats, *, batch_size: int,
                 idle_wait: float, max_backoff: float, fsync_interval: float | None, durable: bool,
                 adopt_interval: float = 10.0):
        self.spool_dir = spool_dir
        self.own = own
        self.orphans: list[Drain] = []
        self.transport = transport
        self.stats = stats
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.max_backoff = max_backoff
        self.fsync_interval = fsync_interval
        self.durable = durable
        self.adopt_interval = adopt_interval
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.progress = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="voxtrail-shipper", daemon=True)
        self._delivery = ThreadPoolExecutor(1, thread_name_prefix="voxtrail-delivery")
        self._in_flight: tuple[Drain, Chunk, Future] | None = None
        self._backoff = 0.0
        self._frames = batch_size  # frames per batch: fewer while isolating an event that fails
        self._suspect: tuple[str, int, int] | None = None  # the batch failing unexpectedly...
        self._strikes = 0  # ... and how many times in a row

    def start(self) -> None:
        self._adopt()  # before the first record, so that flush() covers what dead processes left
        self._next_adopt = time.monotonic() + self.adopt_interval
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self.stop_event.set()
        self.wake.set()
        self.thread.join(timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until everything appended so far, and all adopted sub-spools, are delivered."""
        target = self.own.writer.position()
        deadline = time.monotonic() + timeout
        with self.progress:
            while not self.own.caught_up(target) or self.orphans:
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    return False
                self.wake.set()
                self.progress.wait(min(left, 0.05))
        return True

    def _run(self) -> None:
        next_sync = time.monotonic()
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if self.fsync_interval is not None and now >= next_sync:
                    self.own.writer.sync()
                    next_sync = now + self.fsync_interval
                if now >= self._next_adopt:
                    self._adopt()
                    self._next_adopt = now + self.adopt_interval
                try:
                    busy = self._step()
                except Exception as exc:  # noqa: BLE001 - e.g. the spool's disk failing: keep trying
                    log.exception("voxtrail: the shipper hit an unexpected error")
                    self._failed(f"{type(exc).__name__}: {exc}", warn=False)
                    continue
                if not busy:
                    self.wake.wait(self.idle_wait)
                    self.wake.clear()
            self._settle_in_flight()  # the batch being written: wait for its outcome
        finally:
            self._delivery.shutdown(wait=True)
            self.transport.close()

    def _step(self) -> bool:
        """Prepare the next batch while the previous one is delivered; False when idle."""
        work = None
        try:
            work = self._next_work()
            prepared = self.transport.prepare(self._batch(*work)) if work else None
        except Retry as exc:  # the destination is down (a database transport opens it here)
            if self._settle_in_flight():
                self._failed(str(exc))
            return True
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the thread: events stay spooled
            log.exception("voxtrail: preparing a batch failed unexpectedly")
            if self._settle_in_flight():
                if work is None:  # reading the spool itself failed (its disk): keep trying
                    self._failed(f"{type(exc).__name__}: {exc}", warn=False)
                else:
                    self._unexpected(*work, exc)
            return True
        if not self._settle_in_flight():
            return True  # failed: reading was rewound, what was prepared is dropped
        if work is None:
            return False
        drain, chunk = work
        self._in_flight = (drain, chunk, self._delivery.submit(self.transport.deliver, prepared))
        return True

    def _settle_in_flight(self) -> bool:
        """Wait for the batch in flight; commit it, or rewind and back off. True unless it failed."""
        if self._in_flight is None:
            return True
        drain, chunk, future = self._in_flight
        self._in_flight = None
        try:
            done = future.result()
        except Retry as exc:
            self._failed(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the thread: events stay spooled
            log.exception("voxtrail: shipping failed unexpectedly")
            self._unexpected(drain, chunk, exc)
            return False
        self._backoff = 0.0
        self._suspect, self._strikes = None, 0
        self._frames = min(self.batch_size, self._frames * 2)
        self.stats.delivered(len(chunk.payloads), done)  # before commit: flush() sees both together
        drain.commit(chunk)
        self._notify()
        return True

    def _unexpected(self, drain: Drain, chunk: Chunk, exc: Exception) -> None:
        """A batch failed otherwise than by an outage: try it again a few times, then halve it
        until the event at fault is alone, and set that one aside with the error as its reason."""
        message = f"{type(exc).__name__}: {exc}"
        key = (drain.sub.name, chunk.segment, chunk.offsets[0])
        self._strikes = self._strikes + 1 if key == self._suspect else 1
        self._suspect = key
        if self._strikes >= STRIKES:
            self._suspect, self._strikes = None, 0
            if len(chunk.payloads) > 1:
                self._frames = max(1, len(chunk.payloads) // 2)
            else:
                reason = (f"recorder: the {self.transport.name} transport failed {STRIKES} times on this event: "
                          f"{message}")
                path = set_aside(self.spool_dir, chunk.payloads, reason)
                log.warning("voxtrail: set an event aside in %s after %d failures: %s", path, STRIKES, message)
                self.stats.add(rejected=1)
                drain.commit(chunk)
                self._frames = self.batch_size
        for d in (self.own, *self.orphans):
            d.rewind()
        self.stats.failed(message, FIRST_BACKOFF, warn=False)
        self.stop_event.wait(FIRST_BACKOFF)

    def _failed(self, message: str, warn: bool = True) -> None:
        for drain in (self.own, *self.orphans):
            drain.rewind()
        self._backoff = min(self.max_backoff, self._backoff * 2 or FIRST_BACKOFF)
        self.stats.failed(message, self._backoff, warn=warn)
        self.stop_event.wait(self._backoff)

    def _adopt(self) -> None:
        own = {self.own.sub.name, *(d.sub.name for d in self.orphans)}
        for sub in SubSpool.orphans(self.spool_dir, own):
            log.info("voxtrail: adopting %s, left by a process that is gone", sub.path)
            self.orphans.append(Drain(sub, None, self.durable, self.stats))
            self.stats.add(adopted=1)

    def _next_work(self) -> tuple[Drain, Chunk] | None:
        """The next chunk to ship: from adopted sub-spools first (oldest events), then our own."""
        for drain in list(self.orphans):
            chunk = drain.next_chunk(self._frames)
            if chunk is not None:
                return drain, chunk
            in_flight = self._in_flight is not None and self._in_flight[0] is drain
            if not in_flight and drain.empty():
                drain.sub.remove()
                self.orphans.remove(drain)
        chunk = self.own.next_chunk(self._frames)
        self.stats.set(spooled_bytes=self.own.writer.spooled_bytes)
        self._notify()
        return (self.own, chunk) if chunk is not None else None

    @staticmethod
    def _batch(drain: Drain, chunk: Chunk) -> SpoolBatch:
        return SpoolBatch(f"{drain.sub.name}/{chunk.segment}", chunk.offsets, chunk.payloads)

    def _notify(self) -> None:
        with self.progress:
            self.progress.notify_all()


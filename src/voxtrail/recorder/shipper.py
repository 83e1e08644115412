"""The shipper: a background thread that moves spooled events to their destination.

For each sub-spool it owns (its process's own, and any adopted from dead processes) it reads
frames from the acknowledged position, sends them as one batch, and only after the destination
has committed them saves the new position and deletes segments that are fully shipped. A crash
between the commit and the saved position re-sends that batch, which the store (idempotent on
``request_id``) and ``tts_rejects`` (keyed by segment and offset) absorb. While the destination
is down the batch is retried with exponential backoff, capped at ``max_backoff`` seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from voxtrail.recorder.spool import AckFile, Chunk, SpoolWriter, SubSpool, read_frames, segment_name, segment_numbers
from voxtrail.recorder.stats import Stats
from voxtrail.recorder.transports import Retry, SpoolBatch, Transport

log = logging.getLogger("voxtrail.recorder")

FIRST_BACKOFF = 0.1


class Drain:
    """Reading position in one sub-spool. ``writer`` is set for the live (own) sub-spool."""

    def __init__(self, sub: SubSpool, writer: SpoolWriter | None, durable: bool, stats: Stats):
        self.sub = sub
        self.writer = writer
        self.stats = stats
        self.ack = AckFile(sub.path, durable)
        self.segment, self.offset = self.ack.load()
        if writer is not None:
            self.segment, self.offset = max((self.segment, self.offset), (writer.segment, 0))

    def next_chunk(self, max_frames: int) -> Chunk | None:
        live = self.writer.position() if self.writer is not None else None
        for seg in segment_numbers(self.sub.path):
            if live is not None and seg > live[0]:
                break  # created after we looked at the writer: next time
            path = self.sub.path / segment_name(seg)
            if seg < self.segment:  # shipped and acknowledged; a crash came before its deletion
                self._delete(path)
                continue
            start = self.offset if seg == self.segment else 0
            is_live = live is not None and seg == live[0]
            chunk = read_frames(path, start, live[1] if is_live else None, max_frames)
            if chunk.payloads:
                return chunk
            if is_live:
                return None
            if chunk.torn:
                self.stats.add(torn_bytes=chunk.torn)
                log.warning("voxtrail: %s ends with %d bytes of a torn record (a crash during a write); "
                            "they were not shipped", path, chunk.torn)
            self.segment, self.offset = seg + 1, 0
            self.ack.save(self.segment, self.offset)
            self._delete(path)
        return None

    def commit(self, chunk: Chunk) -> None:
        self.segment, self.offset = chunk.segment, chunk.end
        self.ack.save(self.segment, self.offset)

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
        backoff = 0.0
        next_sync = time.monotonic()
        while not self.stop_event.is_set():
            now = time.monotonic()
            if self.fsync_interval is not None and now >= next_sync:
                self.own.writer.sync()
                next_sync = now + self.fsync_interval
            if now >= self._next_adopt:
                self._adopt()
                self._next_adopt = now + self.adopt_interval
            try:
                shipped = self._ship_once()
            except Retry as exc:
                backoff = min(self.max_backoff, backoff * 2 or FIRST_BACKOFF)
                self.stats.failed(str(exc), backoff)
                self.stop_event.wait(backoff)
                continue
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the thread: events stay spooled
                backoff = min(self.max_backoff, backoff * 2 or FIRST_BACKOFF)
                log.exception("voxtrail: shipping failed unexpectedly; retrying in %.1f s", backoff)
                self.stats.failed(f"{type(exc).__name__}: {exc}", backoff, warn=False)
                self.stop_event.wait(backoff)
                continue
            backoff = 0.0
            if not shipped:
                self.wake.wait(self.idle_wait)
                self.wake.clear()
        self.transport.close()

    def _adopt(self) -> None:
        own = {self.own.sub.name, *(d.sub.name for d in self.orphans)}
        for sub in SubSpool.orphans(self.spool_dir, own):
            log.info("voxtrail: adopting %s, left by a process that is gone", sub.path)
            self.orphans.append(Drain(sub, None, self.durable, self.stats))
            self.stats.add(adopted=1)

    def _ship_once(self) -> bool:
        """Send one batch (from an adopted sub-spool first); False when there was nothing to send."""
        for drain in list(self.orphans):
            chunk = drain.next_chunk(self.batch_size)
            if chunk is None:
                if drain.empty():
                    drain.sub.remove()
                    self.orphans.remove(drain)
                continue
            self._send(drain, chunk)
            return True
        chunk = self.own.next_chunk(self.batch_size)
        self.stats.set(spooled_bytes=self.own.writer.spooled_bytes)
        with self.progress:
            self.progress.notify_all()
        if chunk is None:
            return False
        self._send(self.own, chunk)
        return True

    def _send(self, drain: Drain, chunk: Chunk) -> None:
        batch = SpoolBatch(f"{drain.sub.name}/{chunk.segment}", chunk.offsets, chunk.payloads)
        done = self.transport.send(batch)
        drain.commit(chunk)
        self.stats.delivered(len(chunk.payloads), done)
        with self.progress:
            self.progress.notify_all()

"""Exactly-once import of log files into the store.

Per file: recognise its stream (:mod:`.identity`), read from the stream's checkpoint, parse,
transform, and write each batch *with the checkpoint that covers it* in one transaction. A
crash at any point therefore leaves the store at a batch boundary, and the next run starts
exactly there. Parsing runs in a producer thread while the writer commits the previous batch:
polars and the database drivers release the GIL, so both cores work. A format that raises on a
chunk (a bug) costs only the lines it raised on (:mod:`.salvage`): they are quarantined like any
bad line, logged once per file, and the import goes on.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import stat
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

from voxtrail import transforms
from voxtrail.event import EventBatch, Reject
from voxtrail.sources.files import identity, reader
from voxtrail.sources.files.salvage import ParserFault, parse_chunk
from voxtrail.sources.formats import ParseContext, detect, error_summary
from voxtrail.keys import KeyringError
from voxtrail.store import Checkpoint, Store, StoreError

log = logging.getLogger(__name__)

DETECT_BYTES = 64 << 10
QUEUE_DEPTH = 1


class UnusablePath(Exception):
    """A path the user gave cannot be imported at all (missing, unreadable, unknown format)."""


@dataclass
class FileResult:
    path: str
    stream_id: str = ""
    format: str = ""
    status: str = "ok"  # ok | empty | error
    message: str = ""
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0
    bytes_read: int = 0
    past_retention: int = 0  # stored, but older than the retention: the next purge removes them


@dataclass
class Summary:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files)

    def as_dict(self) -> dict:
        return {
            "imported": self.total("imported"),
            "duplicates": self.total("duplicates"),
            "rejected": self.total("rejected"),
            "skipped_lines": self.total("skipped"),
            "past_retention": self.total("past_retention"),
            "bytes": self.total("bytes_read"),
            "seconds": round(self.seconds, 3),
            "errors": [{"path": f.path, "message": f.message} for f in self.files if f.status == "error"],
            "files": [
                {k: getattr(f, k) for k in ("path", "stream_id", "format", "status", "imported",
                                            "duplicates", "rejected", "skipped", "bytes_read")}
                for f in self.files
            ],
        }


def expand_paths(patterns: Iterable[str], *, allow_missing: bool = False) -> list[str]:
    """Files named by paths or globs, each once, in a stable order (oldest rotation first)."""
    found: list[str] = []
    for pattern in patterns:
        if not glob.has_magic(pattern) and os.path.isdir(pattern):
            raise UnusablePath(f"{pattern} is a directory: name files, or a quoted glob such as '{pattern.rstrip('/')}/*.log'")
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        # A glob skips what is not a regular file (directories, FIFOs, devices) as it skips
        # directories; a path named on its own is refused below.
        matches = [m for m in matches if not os.path.isdir(m) and (not glob.has_magic(pattern) or _regular(m))]
        if not matches and not allow_missing:
            raise UnusablePath(f"no file matches {pattern!r}")
        for m in matches:
            if not os.path.exists(m):
                if allow_missing:
                    found.append(m)
                    continue
                raise UnusablePath(f"no such file: {m}")
            if not _regular(m):  # a FIFO or a device: reading would block or never end
                if allow_missing:
                    continue
                raise UnusablePath(f"{m} is not a regular file (a FIFO, socket or device): voxtrail imports files, "
                                   f"which it can read again from a remembered position")
            if not os.access(m, os.R_OK):
                raise UnusablePath(f"cannot read {m}: permission denied")
            found.append(m)
    seen: set[str] = set()
    unique = []
    for path in found:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    # Rotated files first (tts.log.2.gz, tts.log.1, then tts.log): a stream's older parts
    # are read before the live file reuses their beginning.
    return sorted(unique, key=_rotation_age_key)


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _rotation_age_key(path: str) -> tuple:
    try:
        return (os.stat(path).st_mtime_ns, path)
    except OSError:
        return (0, path)


class Importer:
    def __init__(
        self,
        store: Store,
        *,
        fmt: str = "auto",
        tz: str = "UTC",
        chunk_bytes: int = reader.CHUNK_BYTES,
        progress: Callable[[int], None] | None = None,
    ):
        self.store = store
        self.fmt = fmt
        self.tz = tz
        self.chunk_bytes = chunk_bytes
        self.progress = progress or (lambda n: None)
        self.chain = transforms.default_chain(store.settings)
        self.known: dict[str, Checkpoint] = {}
        self.reload_checkpoints()

    def reload_checkpoints(self) -> None:
        self.known = {cp.stream_id: cp for cp in self.store.checkpoints()}

    def run(self, paths: list[str]) -> Summary:
        started = time.perf_counter()
        summary = Summary()
        for path in paths:
            summary.files.append(self.import_file(path))
        summary.seconds = time.perf_counter() - started
        return summary

    def import_file(self, path: str) -> FileResult:
        result = FileResult(path)
        try:
            head = reader.read_head(path, max(DETECT_BYTES, identity.FINGERPRINT_BYTES))
        except FileNotFoundError:
            return _failed(result, f"no such file: {path}")
        except (OSError, reader.TruncatedCompressedFile) as exc:
            return _failed(result, f"cannot read {path}: {exc}")
        resolution = identity.resolve(path, head[: identity.FINGERPRINT_BYTES], self.known, self.fmt)
        if resolution is None:
            result.status = "empty"
            return result
        checkpoint = resolution.checkpoint
        fmt_name = self._format_for(checkpoint, head, resolution.is_new)
        if fmt_name is None:
            return _failed(result, f"cannot tell the format of {path}: pass --format text|jsonl|audit|indextts")
        checkpoint.format = fmt_name
        result.stream_id, result.format = checkpoint.stream_id, fmt_name
        faults: list[ParserFault] = []
        try:
            self._pump(path, checkpoint, fmt_name, result, faults)
        except reader.TruncatedCompressedFile as exc:
            _failed(result, f"{path} is a damaged or incomplete gzip file: {exc}")
        except OSError as exc:  # removed or made unreadable while being read: the others go on
            _failed(result, f"cannot read {path}: {exc.strerror or exc}")
        except StoreError:
            raise  # an outage: tail waits it out, import stops with one line
        except KeyringError:
            raise  # the keys, not this file: every file would fail alike, so stop with one line
        except Exception as exc:  # noqa: BLE001 - a bug met on this file's data: say so, go on with the others
            log.debug("importing %s failed", path, exc_info=True)
            stopped = self.known.get(checkpoint.stream_id, checkpoint).offset
            _failed(result, f"importing {path} stopped at byte {stopped} on an unexpected error ({error_summary(exc)}); "
                            "what came before is stored")
        finally:
            if faults:
                log.warning("voxtrail: the %s parser failed on %d line(s) of %s, first at byte %d (%s); "
                            "quarantined in tts_rejects, the rest imported", fmt_name, len(faults), path,
                            faults[0].offset, faults[0].reason)
        return result

    def _format_for(self, checkpoint: Checkpoint, head: bytes, is_new: bool) -> str | None:
        if self.fmt != "auto":
            return self.fmt
        if not is_new and checkpoint.format in detect.FORMATS:
            return checkpoint.format
        return detect.detect_format(head)

    def _pump(self, path: str, checkpoint: Checkpoint, fmt_name: str, result: FileResult,
              faults: list[ParserFault]) -> None:
        """Producer thread parses; this thread writes batch + checkpoint transactions."""
        handoff: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        stop = threading.Event()
        producer = threading.Thread(
            target=_produce_into,
            args=(handoff, stop, self._batches(path, checkpoint, fmt_name)),
            name=f"voxtrail-parse:{os.path.basename(path)}",
            daemon=True,
        )
        producer.start()
        try:
            while True:
                item = handoff.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                batch, new_checkpoint, skipped, advanced, batch_faults = item
                written = self.store.write(batch, new_checkpoint, stream_id=new_checkpoint.stream_id, source_file=path)
                self.known[new_checkpoint.stream_id] = new_checkpoint
                faults += batch_faults  # stored: now they are in tts_rejects
                result.imported += written.inserted
                result.duplicates += written.duplicates
                result.rejected += written.rejected
                result.past_retention += written.past_retention
                result.skipped += skipped
                result.bytes_read += advanced
                self.progress(advanced)
        finally:
            stop.set()
            _drain(handoff)
            producer.join()

    def _batches(self, path: str, checkpoint: Checkpoint, fmt_name: str) -> Iterator[tuple]:
        fmt = detect.FORMATS[fmt_name]
        state = dict(checkpoint.state or {})
        with reader.open_content(path) as f:
            start = checkpoint.offset
            tail = reader.read_range(f, max(0, start - identity.TAIL_BYTES), min(start, identity.TAIL_BYTES))
            chunks = reader.ChunkReader(f, start, complete=reader.is_gzip(path), chunk_bytes=self.chunk_bytes)
            position = start
            for chunk in chunks:
                if chunk.start > position:  # a huge line was skipped just before this chunk
                    tail = chunks.skipped_edge
                ctx = ParseContext(checkpoint.stream_id, path, self.tz, state=state, final=chunk.final)
                parsed, faults = parse_chunk(fmt, chunk, ctx)
                chunks.resume_at(parsed.consumed, chunk)
                batch = transforms.apply(self.chain, parsed.batch)
                batch.rejects.extend(_oversized_rejects(chunks))
                tail = (tail + chunk.data[: parsed.consumed - chunk.start])[-identity.TAIL_BYTES :]
                advanced = parsed.consumed - position
                position = parsed.consumed
                encoded = self.store.encode(batch)  # here, in the parsing thread, not the writer's
                yield encoded, _advance(checkpoint, path, position, tail, state), parsed.skipped, advanced, faults
            if chunks.oversized or chunks.position > position:
                # Huge lines skipped at the very end: record them and move past.
                batch = EventBatch.empty()
                batch.rejects.extend(_oversized_rejects(chunks))
                advanced, position = chunks.position - position, chunks.position
                yield batch, _advance(checkpoint, path, position, chunks.skipped_edge, state), 0, advanced, []


def _advance(cp: Checkpoint, path: str, offset: int, tail: bytes, state: dict) -> Checkpoint:
    return replace(cp, path=path, offset=offset, tail_hash=identity.tail_hash(tail), state=dict(state))


def _oversized_rejects(chunks: reader.ChunkReader) -> list[Reject]:
    rejects = [
        Reject(offset, f"line longer than {reader.MAX_LINE_BYTES >> 20} MiB", head)
        for offset, head in chunks.oversized
    ]
    chunks.oversized.clear()
    return rejects


def _produce_into(handoff: queue.Queue, stop: threading.Event, items: Iterator) -> None:
    try:
        for item in items:
            if not _offer(handoff, stop, item):
                return
        _offer(handoff, stop, None)
    except BaseException as exc:  # handed to the writer thread, which re-raises it
        _offer(handoff, stop, exc)


def _offer(handoff: queue.Queue, stop: threading.Event, item) -> bool:
    """Put unless the writer has stopped listening (it sets ``stop`` when it fails)."""
    while not stop.is_set():
        try:
            handoff.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def _failed(result: FileResult, message: str) -> FileResult:
    result.status, result.message = "error", message
    return result

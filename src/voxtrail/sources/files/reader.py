"""Reading a log file as chunks of complete lines, whatever its encoding accidents.

Offsets are byte positions in the *decompressed* content, so a rotated file that was gzipped
keeps the offsets of the file it was; that is what lets a checkpoint follow it.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import BinaryIO, Iterator

from voxtrail.sources.formats import Chunk

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 2 << 20
# A line longer than this is quarantined by its first bytes instead of being held in memory,
# so peak memory stays bounded whatever the file holds.
MAX_LINE_BYTES = 64 << 20
#: Bytes kept from the end of a skipped line: a checkpoint after it hashes the bytes before it.
EDGE_BYTES = 64


class TruncatedCompressedFile(Exception):
    """A gzip file ended early (still being written, or damaged)."""


def is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def open_content(path: str) -> BinaryIO:
    """Open for reading the file's content: decompressed if it is gzip, as-is otherwise."""
    raw = open(path, "rb")
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    raw.seek(0)
    return raw


def content_size(path: str) -> int | None:
    """Size of the content if known without reading it (None for gzip)."""
    return None if is_gzip(path) else os.path.getsize(path)


def read_range(f: BinaryIO, start: int, length: int) -> bytes:
    seek(f, start)
    return _read(f, length)


def seek(f: BinaryIO, offset: int) -> None:
    """Seek; on gzip this decompresses up to ``offset`` (gzip streams cannot jump)."""
    try:
        f.seek(offset)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise TruncatedCompressedFile(str(exc)) from exc


def _read(f: BinaryIO, n: int) -> bytes:
    try:
        return f.read(n)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise TruncatedCompressedFile(str(exc)) from exc


def first_line_start(head: bytes) -> int:
    """Where the first line starts: after a UTF-8 byte-order mark if there is one."""
    return len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0


class ChunkReader:
    """Yields :class:`Chunk` objects of complete lines from ``start`` on.

    The caller tells the reader how far each chunk was consumed (:meth:`resume_at`); bytes
    after that point are handed again with the next chunk, so a format may wait for the rest
    of a multi-line record. A final line without a newline is held back, except in a file
    that cannot grow (``complete``: a compressed file).
    """

    def __init__(self, f: BinaryIO, start: int, *, complete: bool, chunk_bytes: int = CHUNK_BYTES):
        self.f = f
        self.position = start  # absolute offset of the first byte not yet handed out
        self.complete = complete
        self.chunk_bytes = chunk_bytes
        self.oversized: list[tuple[int, bytes]] = []  # (offset, first bytes) of skipped huge lines
        self.skipped_edge = b""  # the last EDGE_BYTES of the latest skipped line, newline included
        self._buffer = b""  # bytes from self.position on, already read
        self._eof = False
        self._held = False  # the buffer starts with bytes the consumer gave back
        self._final_offered = False
        seek(f, start)

    def resume_at(self, offset: int, chunk: Chunk) -> None:
        """The consumer accounted for everything before ``offset`` of ``chunk``.

        What it gave back is offered again only with more data after it (or, in a complete
        file, once more as the final chunk), so a format that waits cannot spin.
        """
        if offset >= chunk.end:
            return
        self._buffer = chunk.data[offset - chunk.start :] + self._buffer
        self.position = offset
        self._held = True

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            chunk = self._next_chunk()
            if chunk is None:
                return
            yield chunk

    def _next_chunk(self) -> Chunk | None:
        while True:
            if self._eof:
                return self._last_chunk()
            cut = self._buffer.rfind(b"\n") + 1
            if cut and len(self._buffer) >= self.chunk_bytes and not self._held:
                return self._take(cut, final=False)
            if not cut and len(self._buffer) > MAX_LINE_BYTES:
                self._skip_oversized_line()
                continue
            more = _read(self.f, self.chunk_bytes)
            if more:
                self._buffer += more
                self._held = False
            else:
                self._eof = True

    def _last_chunk(self) -> Chunk | None:
        if not self._buffer:
            return None
        if self.complete:
            # Nothing more will be written: hand everything over once, newline or not.
            if self._final_offered:
                return None
            self._final_offered = True
            return self._take(len(self._buffer), final=True)
        cut = self._buffer.rfind(b"\n") + 1
        if self._held or not cut:
            return None  # wait for the writer to finish the line or the record
        return self._take(cut, final=False)

    def _take(self, n: int, *, final: bool) -> Chunk:
        chunk = Chunk(self.position, self._buffer[:n], final=final)
        self._buffer = self._buffer[n:]
        self.position += n
        return chunk

    def _skip_oversized_line(self) -> None:
        """Drop a line too long to hold, remembering where it was; resume after its newline."""
        start, head, skipped = self.position, self._buffer[:200], len(self._buffer)
        edge, self._buffer = self._buffer[-EDGE_BYTES:], b""
        while True:
            more = _read(self.f, self.chunk_bytes)
            if not more:
                self._eof = True
                if not self.complete:
                    # The line is still being written: come back to it on a later pass.
                    self.position = start
                    return
                break
            nl = more.find(b"\n")
            if nl >= 0:
                skipped += nl + 1
                edge = (edge + more[: nl + 1])[-EDGE_BYTES:]
                self._buffer = more[nl + 1 :]
                break
            skipped += len(more)
            edge = (edge + more)[-EDGE_BYTES:]
        self.oversized.append((start, head))
        self.skipped_edge = edge
        self.position = start + skipped


def read_head(path: str, n: int) -> bytes:
    with open_content(path) as f:
        return _read(f, n)

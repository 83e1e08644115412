"""Log formats: each turns a chunk of complete lines into an :class:`~voxtrail.event.EventBatch`.

A format is a small object with a ``name`` and a ``parse(chunk, ctx)`` method. The file source
(:mod:`voxtrail.sources.files`) reads bytes, cuts them at line boundaries, and hands each chunk
to the format; the format never does I/O. Formats register themselves in :data:`FORMATS`, the
same registry ``--format`` and auto-detection read, so a new format is one module and one entry.

Contract of ``parse``:
- every line of the chunk ends up as part of an event, a :class:`~voxtrail.event.Reject`, or is
  counted in ``skipped`` (console noise that is not a record, e.g. model-loading messages);
- ``consumed`` is the absolute offset up to which the chunk is fully accounted for. A format
  whose records span several lines (``indextts``) may stop before the chunk's end to wait for
  the rest of a record; the file source then hands those lines again with the next chunk;
- ``ctx.state`` is a small JSON-serialisable dict kept in the checkpoint with the offset, for
  formats that carry facts from one record to the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import polars as pl

from voxtrail.event import EventBatch, Reject

EXCERPT_BYTES = 200


@dataclass
class Chunk:
    """Complete lines of one file, starting at byte ``start`` of the (decompressed) file.

    ``data`` ends with a newline unless ``final`` is true (the file is complete, e.g. gzip),
    in which case its last line may lack one.
    """

    start: int
    data: bytes
    final: bool = False

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def line_offsets(self) -> np.ndarray:
        """Absolute byte offset of each line's first byte (one entry per line of :meth:`lines`)."""
        if not self.data:
            return np.empty(0, dtype=np.int64)
        ends = np.flatnonzero(np.frombuffer(self.data, dtype=np.uint8) == 10)
        starts = np.concatenate((np.zeros(1, dtype=np.int64), ends.astype(np.int64) + 1))
        if self._ends_with_newline():
            starts = starts[:-1]
        return starts + self.start

    def lines(self) -> pl.Series:
        """The lines as text (invalid UTF-8 replaced by U+FFFD), without ``\\n`` or ``\\r\\n``."""
        return self.lines_and_offsets()[0]

    def lines_and_offsets(self) -> tuple[pl.Series, pl.Series]:
        """:meth:`lines` and :meth:`line_offsets` (as an Int64 Series) in one pass, for hot paths."""
        if not self.data:
            return pl.Series("line", [], dtype=pl.Utf8), pl.Series("source_offset", [], dtype=pl.Int64)
        raw = self.data[:-1] if self._ends_with_newline() else self.data
        # Handing polars bytes (not a Python str, which it would re-encode) and splitting a few
        # pieces at once is ~3x faster than splitting one big str: this is the hot path.
        pieces = _pieces(raw, 8)
        try:
            text = pl.Series("line", pieces, dtype=pl.Binary).cast(pl.Utf8)
        except pl.exceptions.ComputeError:  # invalid UTF-8: rare, take the slow lossy path
            pieces = [p.decode("utf-8", "replace").encode() for p in pieces]
            text = pl.Series("line", pieces, dtype=pl.Binary).cast(pl.Utf8)
            lines = text.str.split("\n").explode().str.strip_suffix("\r").rename("line")
            return lines, pl.Series("source_offset", self.line_offsets())  # replacement changed sizes
        raw_lines = text.str.split("\n").explode()
        sizes = raw_lines.str.len_bytes().cast(pl.Int64) + 1
        offsets = (sizes.cum_sum() - sizes + self.start).rename("source_offset")
        return raw_lines.str.strip_suffix("\r").rename("line"), offsets

    def line_bytes(self, offset: int) -> bytes:
        """The first bytes of the line starting at absolute ``offset`` (for a reject's excerpt)."""
        rel = offset - self.start
        end = self.data.find(b"\n", rel)
        line = self.data[rel : end if end >= 0 else len(self.data)]
        return line.rstrip(b"\r")[:EXCERPT_BYTES]

    def _ends_with_newline(self) -> bool:
        return self.data.endswith(b"\n")


def _pieces(raw: bytes, n: int) -> list[bytes]:
    """``raw`` cut into about ``n`` pieces at newlines (the newline itself dropped)."""
    if len(raw) < 1 << 20:
        return [raw]
    out, start = [], 0
    for i in range(1, n):
        cut = raw.find(b"\n", max(start, len(raw) * i // n))
        if cut < 0:
            break
        out.append(raw[start:cut])
        start = cut + 1
    out.append(raw[start:])
    return out


@dataclass
class ParseContext:
    stream_id: str  # the file's identity (fingerprint), used for deterministic request ids
    source_file: str  # path as given by the user
    tz: str  # IANA time zone in which naive timestamps are read
    state: dict[str, Any] = field(default_factory=dict)
    final: bool = False  # no more data will follow (immutable file, or flush at shutdown)


@dataclass
class ParseResult:
    batch: EventBatch
    consumed: int
    skipped: int = 0


class Format(Protocol):
    name: str

    def parse(self, chunk: Chunk, ctx: ParseContext) -> ParseResult: ...

    def sniff(self, head: list[str]) -> float:
        """Confidence in [0, 1] that these first lines of a file are in this format."""
        ...


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


def request_ids(stream_id: str, offsets: pl.Expr | pl.Series) -> pl.Expr | pl.Series:
    """Deterministic ids for records that carry none: the stream and the line's byte offset.

    Zero-padded so ids of one file sort in file order (cheap appends to the unique index).
    """
    if isinstance(offsets, pl.Series):
        return (stream_id + "-" + offsets.cast(pl.Utf8).str.zfill(12)).alias("request_id")
    return (pl.lit(stream_id + "-") + offsets.cast(pl.Utf8).str.zfill(12)).alias("request_id")


def to_utc(naive: pl.Expr, tz: str) -> pl.Expr:
    """Read naive datetimes in ``tz`` and return UTC-naive ones (the store's convention)."""
    if tz == "UTC":
        return naive
    return (
        naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .dt.replace_time_zone(None)
    )


def error_summary(exc: BaseException, limit: int = EXCERPT_BYTES) -> str:
    """``ExceptionType: first line of its message``, cut to ``limit`` characters: what a reject's
    reason or a log line says about an unexpected error (never a traceback; polars' messages run
    to several lines of query plan)."""
    message = str(exc).strip().partition("\n")[0]
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rejects_from(chunk: Chunk, offsets: np.ndarray | list[int], reasons: list[str]) -> list[Reject]:
    return [Reject(int(o), r, chunk.line_bytes(int(o))) for o, r in zip(offsets, reasons)]

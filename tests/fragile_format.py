"""Formats with a bug, for the parser guard's tests (registered by :func:`registered`).

``fragile``: one line a record (``ok <seconds>``; ``# ...`` and blank lines are noise); its
parse raises on any chunk that holds a line ``BOOM``, the way an unforeseen input crashes a real
parser. ``fragile-blocks``: the ``indextts`` format with the same bug, for records that span
lines. ``wrong-output``: a bug past the parser (a batch the store refuses). Run as a script (``python fragile_format.py import ...``), it is the voxtrail command
with these formats registered.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Iterator

import polars as pl

from voxtrail.event import EventBatch, polars_schema
from voxtrail.sources.formats import FORMATS, Chunk, ParseContext, ParseResult, register, request_ids

BOOM = "BOOM"
EPOCH = datetime(2025, 3, 1)


def boom_in(chunk: Chunk) -> bool:
    return (chunk.lines() == BOOM).any()


class Fragile:
    name = "fragile"

    def parse(self, chunk: Chunk, ctx: ParseContext) -> ParseResult:
        if boom_in(chunk):
            raise ValueError("boom\n  and a second line a reason must not carry")
        lines, offsets = chunk.lines_and_offsets()
        df = pl.DataFrame([lines, offsets])
        ok = df.filter(pl.col("line").str.starts_with("ok "))
        frame = ok.select(
            request_ids(ctx.stream_id, pl.col("source_offset")),
            (pl.lit(EPOCH) + pl.duration(seconds=pl.col("line").str.slice(3).cast(pl.Int64))).alias("ts"),
            pl.lit("success").alias("status"),
            "source_offset",
        ).cast(polars_schema(["request_id", "ts", "status", "source_offset"]))
        batch = EventBatch(frame, [], {"source": "file", "source_format": self.name, "source_file": ctx.source_file})
        return ParseResult(batch, chunk.end, df.height - ok.height)

    def sniff(self, head: list[str]) -> float:
        return 1.0 if head and all(line.startswith(("ok ", BOOM, "#")) for line in head) else 0.0


class FragileBlocks:
    name = "fragile-blocks"

    def parse(self, chunk: Chunk, ctx: ParseContext) -> ParseResult:
        if boom_in(chunk):
            raise RuntimeError("boom in a block")
        return FORMATS["indextts"].parse(chunk, ctx)

    def sniff(self, head: list[str]) -> float:
        return 0.0


class WrongOutput(Fragile):
    """Parses without raising, but a line ``WRONG`` gives a batch the store refuses (a field that
    does not exist): a bug past the parser, which the parser guard cannot see."""

    name = "wrong-output"

    def parse(self, chunk: Chunk, ctx: ParseContext) -> ParseResult:
        result = super().parse(chunk, ctx)
        if (chunk.lines() == "WRONG").any():
            result.batch.frame = result.batch.frame.with_columns(pl.lit(1).alias("bogus"))
        return result

    def sniff(self, head: list[str]) -> float:
        return 0.0


def ok_lines(seconds: range) -> list[str]:
    return [f"ok {s}\n" for s in seconds]


def expected_ts(line: str) -> datetime:
    return EPOCH + timedelta(seconds=int(line[3:]))


@contextmanager
def registered() -> Iterator[None]:
    """The two formats in the registry (``--format``'s and detection's) for the block's duration."""
    formats = [Fragile(), FragileBlocks(), WrongOutput()]
    for fmt in formats:
        register(fmt)
    try:
        yield
    finally:
        for fmt in formats:
            FORMATS.pop(fmt.name)


if __name__ == "__main__":
    from voxtrail.cli import main

    with registered():
        main(sys.argv[1:])

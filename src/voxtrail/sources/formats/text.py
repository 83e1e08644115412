"""``text``: seed 000's log line ``[2025-03-01 00:00:01] INFO - TextLen=75, Emotion=happy, Duration=7.9s, Success=True``.

This is the hot path (millions of lines), so it never loops over lines in Python. Lines in
the canonical shape (what the logging call writes) are recognised by one ``str.contains``
and cut apart by position: the regex has already proved where every separator is, so cheap
``find``/``slice`` replace a capturing regex, which polars runs ~10x slower. The rare other
lines (extra spaces, lower-case booleans, a BOM) take a lenient capturing regex; only lines
that fail both are looked at one by one, to name the reason of their reject.

Both patterns run in polars' regex engine (Rust's ``regex``), which is linear in the line's
length whatever the pattern, and so does :meth:`TextFormat.sniff`, with the parser's own
pattern: Python's backtracking ``re`` took cubic time on ``Emotion=`` and a run of spaces.
Digits are ASCII (``[0-9]``, not ``\\d``, which is every script's digits in both engines): a
``TextLen`` in other digits is a reject, not an event whose number failed to convert.
"""

from __future__ import annotations

import polars as pl

from voxtrail.event import EventBatch
from voxtrail.sources.formats import Chunk, ParseContext, ParseResult, register, rejects_from, request_ids, to_utc

NAME = "text"
SHAPE = "[time] LEVEL - TextLen=..., Emotion=..., Duration=...s, Success=..."

# U+FFFD is excluded so that lines with invalid UTF-8 fall to the slow path and are rejected
# rather than stored with a mangled emotion.
CANONICAL = (
    r"^\[[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:[,.][0-9]{3}|\.[0-9]{6})?\] [A-Z]+ - "
    r"TextLen=[0-9]{1,9}, Emotion=[^,\x{FFFD}]+, Duration=[0-9]{1,9}(?:\.[0-9]{1,6})?s, Success=(?:True|False)$"
)
LENIENT = (
    r"^\x{FEFF}?\s*\[\s*(?<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[ T](?<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:[,.](?<frac>[0-9]{1,6}))?\s*\]\s*(?<level>\w+)\s*-\s*TextLen\s*=\s*(?<text_length>[0-9]{1,9})\s*,"
    r"\s*Emotion\s*=\s*(?<emotion>[^,]*?)\s*,\s*Duration\s*=\s*(?<duration>[0-9]{1,9}(?:\.[0-9]*)?|\.[0-9]+)\s*s?\s*,"
    r"\s*Success\s*=\s*(?<success>True|False|true|false|TRUE|FALSE|1|0)\s*$"
)


def _find_unit_length(line: pl.Expr) -> pl.Expr:
    """The length of ``line`` in the unit ``str.find`` returns offsets in."""
    return line.str.len_chars() if _FIND_COUNTS_CHARS else line.str.len_bytes()


_FIND_COUNTS_CHARS = pl.select(pl.lit("\u00e9,").str.find(",", literal=True)).item() == 1


def _canonical_columns() -> list[pl.Expr]:
    """Fields of canonical lines by position; garbage (filtered out later) on other lines.

    ``str.slice`` counts characters; ``str.find`` counts bytes before polars 2 and characters
    since. Both agree up to the emotion (the regex admits only ASCII there), and what follows
    the emotion is measured from the end, in ``str.find``'s unit.
    """
    line = pl.col("line")
    close = line.str.find("]", literal=True)
    dash = line.str.find(" - TextLen=", literal=True)
    emo = line.str.find(", Emotion=", literal=True)
    dur = line.str.find(", Duration=", literal=True)
    tail_len = _find_unit_length(line) - dur  # ", Duration=7.9s, Success=True", all ASCII
    success = line.str.ends_with("=True")
    # CANONICAL admits only ``,mmm``/``.mmm`` or ``.ffffff``: fixed-width slices read both
    # (a slice that runs into ``] LEVEL`` fails its cast and falls through the coalesce).
    micros = pl.coalesce(
        line.str.slice(21, 6).cast(pl.Int64, strict=False),
        line.str.slice(21, 3).cast(pl.Int64, strict=False) * 1000,
        pl.lit(0, dtype=pl.Int64),
    )
    seconds = line.str.slice(1, 19).str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False, cache=False)
    return [
        (seconds + pl.duration(microseconds=micros)).alias("ts"),
        pl.when(success).then(pl.lit("success")).otherwise(pl.lit("failed")).alias("status"),
        line.str.slice(close + 2, dash - close - 2).alias("level"),
        line.str.slice(emo + 10, line.str.len_chars() - emo - 10 - tail_len).alias("emotion"),
        (line.str.tail(tail_len).str.slice(11, tail_len - 11 - 15 - (~success).cast(pl.Int64))
         .cast(pl.Float64, strict=False)
         * 1000.0).alias("latency_ms"),
        line.str.slice(dash + 11, emo - dash - 11).cast(pl.Int64, strict=False).alias("text_length"),
    ]


def _lenient(rest: pl.DataFrame) -> pl.DataFrame:
    """Parse the non-canonical lines; ``ts`` stays null on the ones that do not match."""
    g = rest.select("source_offset", "line", pl.col("line").str.extract_groups(LENIENT).alias("g")).unnest("g")
    stamp = pl.col("date") + " " + pl.col("time")
    micros = pl.col("frac").str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0)
    return g.select(
        "source_offset",
        "line",
        (stamp.str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False, cache=False)
         + pl.duration(microseconds=micros)).alias("ts"),
        pl.when(pl.col("success").str.to_lowercase().is_in(["true", "1"]))
        .then(pl.lit("success")).otherwise(pl.lit("failed")).alias("status"),
        pl.col("level").str.to_uppercase().alias("level"),
        pl.when(pl.col("emotion") != "").then(pl.col("emotion")).alias("emotion"),
        (pl.col("duration").cast(pl.Float64, strict=False) * 1000.0).alias("latency_ms"),
        pl.col("text_length").cast(pl.Int64, strict=False),
        pl.col("success").is_not_null().alias("matched"),
    )


def _reason(line: str, matched: bool, tz: str) -> str:
    if "\ufffd" in line:
        return "text: invalid UTF-8"
    if not matched:
        return f"text: no match for {SHAPE}"
    stamp = line.split("]", 1)[0].lstrip("\ufeff \t[")
    return f"text: invalid timestamp '{stamp[:40]}' (or nonexistent in {tz})"


class TextFormat:
    name = NAME

    def parse(self, chunk: Chunk, ctx: ParseContext) -> ParseResult:
        lines, offsets = chunk.lines_and_offsets()
        df = pl.DataFrame([lines, offsets]).lazy().with_columns(
            pl.col("line").str.contains(CANONICAL).alias("canonical"),
            *_canonical_columns(),
            request_ids(ctx.stream_id, pl.col("source_offset")),
        )
        is_good = pl.col("canonical") & pl.col("ts").is_not_null()
        good, rest = pl.collect_all([df.filter(is_good).drop("line", "canonical"),
                                     df.filter(~is_good).select("line", "source_offset")])
        skipped = 0
        rejects = []
        if rest.height:
            blank = rest["line"].str.strip_chars().str.len_bytes() == 0
            skipped = int(blank.sum())
            parsed = _lenient(rest.filter(~blank))
            ok = pl.col("matched") & pl.col("ts").is_not_null() & ~pl.col("line").str.contains("\ufffd", literal=True)
            parsed = parsed.with_columns(request_ids(ctx.stream_id, pl.col("source_offset")))
            good = pl.concat([good, parsed.filter(ok).select(good.columns)])
            bad = parsed.filter(~ok)
            if bad.height:
                rejects = rejects_from(chunk, bad["source_offset"].to_numpy(),
                                       [_reason(line, m, ctx.tz) for line, m in zip(bad["line"], bad["matched"])])
            good = good.sort("source_offset")
        if ctx.tz != "UTC":
            good = good.with_columns(to_utc(pl.col("ts"), ctx.tz))
        if ctx.tz != "UTC" and good["ts"].null_count():  # local times skipped by a DST change
            gap = good.filter(pl.col("ts").is_null())
            rejects += rejects_from(chunk, gap["source_offset"].to_numpy(),
                                    [f"text: nonexistent local time in {ctx.tz}"] * gap.height)
            good = good.filter(pl.col("ts").is_not_null())
        if rejects:
            rejects.sort(key=lambda r: r.offset)
        frame = good.select("request_id", "ts", "status", "level", "emotion", "latency_ms", "text_length",
                            "source_offset")
        batch = EventBatch(frame, rejects, {"source": "file", "source_format": NAME, "source_file": ctx.source_file})
        return ParseResult(batch, chunk.end, skipped)

    def sniff(self, head: list[str]) -> float:
        lines = [line for line in head if line.strip()]
        if not lines:
            return 0.0
        return int(pl.Series(lines, dtype=pl.String).str.contains(LENIENT).sum()) / len(lines)


FORMAT = register(TextFormat())

"""``indextts``: what IndexTTS2's ``webui.py`` prints to the console, one block per generation.

A block opens with ``Emo control mode:N,weight:W,vec:V`` and closes with ``>> wav file saved to:
outputs/spk_<unix seconds>.wav`` or with the last line of a traceback. The console has no
timestamps; the wav name is the only clock. A failed block has no wav, so it borrows the time
of the previous success (``ctx.state["last_ts"]``, which survives restarts) or of the next
one, and is marked ``ts_estimated``. Everything else the WebUI prints is noise, counted as
skipped. Few lines, many shapes: a plain line loop is clearer than vectorising.

The patterns read untrusted console text with Python's backtracking ``re``, so each is written
to run in linear time: anchored at the line's start, and no two quantifiers next to each other
can match the same characters (``weight:([^,]+),`` and strip, not ``\\s*([^,]+?)\\s*,``, which
is cubic in a run of spaces). tests/test_linear_time.py holds each to that.
"""

from __future__ import annotations

import ast
import math
import re
from datetime import datetime, timezone
from typing import Any

import orjson
import polars as pl

from voxtrail.event import EMOTION_CONTROL_MODES, EMOTION_VECTOR_LABELS, EventBatch, Reject, polars_schema
from voxtrail.sources.formats import EXCERPT_BYTES, Chunk, ParseContext, ParseResult, register, request_ids

NAME = "indextts"
START = re.compile(r"^\s*Emo control mode:\s*(\d+)\s*,\s*weight:([^,]+),\s*vec:(.*)$")  # weight, vec: strip
STAGE = re.compile(r"^>> (gpt_gen|gpt_forward|s2mel|bigvgan)_time: ([\d.]+) seconds")
VALUE = re.compile(r"^>> (Total inference time|Generated audio length|RTF): ([\d.]+)")
SAVED = re.compile(r"^>> wav file saved to: (.*)$")  # rstrip the path
DETECTED = "detected emotion vectors from text:"
UNIX_TIME = re.compile(r"(\d{9,11})(?:\.\d+)?\.wav$")
CONSOLE = re.compile(r"^>> (starting inference|\w+_time:|Total inference time|wav file saved|.*weights restored from"
                     r"|.*loaded)")
FINAL = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")  # ``torch.OutOfMemoryError: CUDA out of memory``
_COLUMNS = ("request_id", "ts", "status", "emotion", "latency_ms", "emotion_vector", "emotion_control", "emo_alpha",
            "error_type", "error_message", "output_audio_url", "audio_length_ms", "rtf", "gpt_gen_ms",
            "gpt_forward_ms", "s2mel_ms", "bigvgan_ms", "source_offset", "attributes")
_VALUE_FIELDS = {"Total inference time": ("latency_ms", 1000.0), "Generated audio length": ("audio_length_ms", 1000.0),
                 "RTF": ("rtf", 1.0)}


def _number(text: str) -> float:
    """A finite float; ValueError otherwise (``1.2.3``, ``inf``, or digits past float's range)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text[:40]!r}")
    return value


class _Block:
    def __init__(self, offset: int, line: str, m: re.Match):
        self.offset = offset
        self.line = line
        self.error: str | None = None
        self.in_traceback = False
        self.done = False
        self.ev: dict[str, Any] = {"status": "success"}
        try:
            self.ev["emotion_control"] = EMOTION_CONTROL_MODES.get(int(m.group(1)))
            self.ev["emo_alpha"] = _number(m.group(2).strip())
            vec = ast.literal_eval(m.group(3).strip())
            if vec is not None:
                self.vector([float(x) for x in vec])
        except (ValueError, TypeError, OverflowError, SyntaxError, MemoryError, RecursionError):
            self.error = f"indextts: invalid weight or vec in '{line[:80]}'"

    def vector(self, vec: list[float]) -> None:
        if len(vec) != len(EMOTION_VECTOR_LABELS):
            raise ValueError("vector length")
        if not all(map(math.isfinite, vec)):
            raise ValueError("vector value not finite")
        self.ev["emotion_vector"] = orjson.dumps(vec).decode()
        best = max(range(len(vec)), key=vec.__getitem__)
        self.ev["emotion"] = EMOTION_VECTOR_LABELS[best] if vec[best] > 0 else None

    def feed(self, line: str) -> bool:
        """Take one line of the block; False if it is not one of the lines a block has."""
        if self.in_traceback:
            if not line.strip() or line[0].isspace() or line.startswith(("Traceback (", "During handling",
                                                                         "The above exception")):
                return True
            m = FINAL.match(line)
            if not m:
                return False
            self.ev.update(status="failed", error_type=m.group(1), error_message=m.group(2))
            self.done = True
            return True
        if line.startswith("Traceback (most recent call last):"):
            self.in_traceback = True
            return True
        try:
            return self._feed_value(line)
        except ValueError:
            self.error = f"indextts: invalid number in '{line[:80]}'"
            return True

    def _feed_value(self, line: str) -> bool:
        if m := STAGE.match(line):
            self.ev[f"{m.group(1)}_ms"] = _number(m.group(2)) * 1000.0
        elif m := VALUE.match(line):
            name, scale = _VALUE_FIELDS[m.group(1)]
            self.ev[name] = _number(m.group(2)) * scale
        elif m := SAVED.match(line):
            path = m.group(1).rstrip()
            self.ev["output_audio_url"] = path
            if t := UNIX_TIME.search(path):
                self.ev["ts"] = datetime.fromtimestamp(int(t.group(1)), timezone.utc).replace(tzinfo=None)
            self.done = True
        elif line.startswith(DETECTED):
            try:
                d = ast.literal_eval(line[len(DETECTED):].strip())
                self.vector([float(d.get(k, 0.0)) for k in EMOTION_VECTOR_LABELS])
            except (ValueError, TypeError, OverflowError, SyntaxError, AttributeError, MemoryError, RecursionError):
                self.error = "indextts: invalid detected emotion vectors"
        else:
            return line.startswith((">> ", "torch.Size("))
        return True


class IndexTTSFormat:
    name = NAME

    def parse(self, chunk: Chunk, ctx: ParseContext) -> ParseResult:
        events: list[dict[str, Any]] = []
        rejects: list[Reject] = []
        skipped: list[int] = []  # offsets, so that noise in a held-back tail is not counted twice
        block: _Block | None = None
        offset = chunk.start
        lines = chunk.data.split(b"\n")
        if chunk.data.endswith(b"\n"):
            lines.pop()

        def reject(b: _Block, reason: str) -> None:
            rejects.append(Reject(b.offset, reason, b.line.encode()[:EXCERPT_BYTES]))

        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r").lstrip("\ufeff")
            if m := START.match(line):
                if block is not None:
                    reject(block, "indextts: generation block interrupted by a new 'Emo control mode' line")
                block = _Block(offset, line, m)
            elif block is None or not block.feed(line):
                skipped.append(offset)
            if block is not None and block.done:
                if block.error:
                    reject(block, block.error)
                else:
                    events.append({**block.ev, "source_offset": block.offset})
                block = None
            offset += len(raw) + 1

        consumed = chunk.end
        if block is not None:
            if ctx.final:
                reject(block, "indextts: incomplete generation block")
            else:
                consumed = block.offset
        consumed = self._date_failures(events, rejects, ctx, chunk, consumed)
        events = [e for e in events if e["source_offset"] < consumed]
        frame = pl.DataFrame({c: [e.get(c) for e in events] for c in _COLUMNS[1:]},
                             schema=polars_schema(_COLUMNS[1:]))
        frame = frame.with_columns(request_ids(ctx.stream_id, pl.col("source_offset"))).select(_COLUMNS)
        rejects.sort(key=lambda r: r.offset)
        batch = EventBatch(frame, [r for r in rejects if r.offset < consumed],
                           {"source": "file", "source_format": NAME, "source_file": ctx.source_file})
        return ParseResult(batch, consumed, sum(1 for o in skipped if o < consumed))

    @staticmethod
    def _date_failures(events: list[dict], rejects: list[Reject], ctx: ParseContext, chunk: Chunk,
                       consumed: int) -> int:
        """Give failed blocks a time; returns where to stop if one must wait for a later success."""
        last = ctx.state.get("last_ts")
        last_ts = datetime.fromtimestamp(last, timezone.utc).replace(tzinfo=None) if last is not None else None
        for i, ev in enumerate(events):
            if ev.get("ts") is not None:
                last_ts = ev["ts"]
                continue
            ts = last_ts or next((e["ts"] for e in events[i + 1:] if e.get("ts") is not None), None)
            if ts is None:
                if not ctx.final:
                    consumed = min(consumed, ev["source_offset"])
                    break
                rejects.append(Reject(ev["source_offset"], "indextts: no time known for this generation "
                                      "(no saved wav before or after it)", chunk.line_bytes(ev["source_offset"])))
                ev["source_offset"] = consumed  # dropped from the events below
                continue
            ev["ts"] = ts
            ev["attributes"] = '{"ts_estimated":true}'
        kept = [e["ts"] for e in events if e["source_offset"] < consumed and e.get("attributes") is None]
        if kept:
            ctx.state["last_ts"] = kept[-1].replace(tzinfo=timezone.utc).timestamp()
        return consumed

    def sniff(self, head: list[str]) -> float:
        if any(START.match(line) for line in head):
            return 0.95
        # Model-loading messages, for a log whose head ends before the first generation.
        markers = sum(1 for line in head if CONSOLE.match(line))
        return 0.6 if markers >= 2 else 0.0


FORMAT = register(IndexTTSFormat())

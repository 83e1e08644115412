"""A realistic month of TTS generations, generated fast: the demo's and the benchmark's data.

Everything is vectorised (numpy for the random draws, polars for the strings), so ten million
events take seconds to generate; the store's write path is the slow part. The same ``seed`` and
``end`` always give the same events, request_ids included, so writing twice stores them once.

What is in it:

- **traffic** over ``days`` days ending at ``end``: a daily cycle (quiet at night, busiest in the
  afternoon, in ``Asia/Shanghai`` local time like seed 000's users) and a weekly one (weekends at
  about half of weekdays);
- **4 nodes** (``tts-a`` .. ``tts-d``; ``tts-d`` has a slower GPU) running ``IndexTTS2``, versions
  ``2.0`` and ``2.1`` side by side (an A/B test: 30 % of calls go to ``2.1``, which is ~12 % faster);
- **emotion control modes** ``speaker`` (no emotion label), ``audio``, ``vector`` and ``text``, and
  IndexTTS2's 8 emotion labels; ``angry`` and ``surprised`` take longer;
- **text length** (log-normal, median ~70 characters) driving latency, audio length, RTF and the
  four IndexTTS2 stage times (gpt_gen, gpt_forward, s2mel, bigvgan);
- **failures**: ~1 % (more for long texts), with realistic error types and messages;
- **a bad hour** (``bad_hour_start``, by default 9 days before ``end``, on ``tts-c``): 45 % of
  its calls fail with CUDA out-of-memory errors and the rest are 4x slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

import numpy as np
import polars as pl

from voxtrail.event import EMOTION_VECTOR_LABELS, EventBatch

NODES = ("tts-a", "tts-b", "tts-c", "tts-d")
NODE_WEIGHTS = (0.3, 0.3, 0.25, 0.15)
NODE_SPEED = (1.0, 1.0, 1.05, 1.35)  # latency multiplier: tts-d has an older GPU
MODEL = "IndexTTS2"
VERSIONS = ("2.0", "2.1")
VERSION_WEIGHTS = (0.7, 0.3)
VERSION_SPEED = (1.0, 0.88)
CONTROLS = ("speaker", "audio", "vector", "text")
CONTROL_WEIGHTS = (0.4, 0.15, 0.2, 0.25)
EMOTIONS = EMOTION_VECTOR_LABELS
EMOTION_WEIGHTS = (0.26, 0.1, 0.14, 0.05, 0.03, 0.07, 0.08, 0.27)
EMOTION_SPEED = (1.0, 1.25, 1.05, 1.0, 1.0, 1.08, 1.18, 0.95)
ERRORS = (
    ("torch.OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB"),
    ("RuntimeError", "Expected all tensors to be on the same device"),
    ("ValueError", "reference audio is empty or unreadable"),
    ("TimeoutError", "generation exceeded 120 s"),
)
ERROR_WEIGHTS = (0.35, 0.2, 0.3, 0.15)
#: Relative traffic by local hour of day (0..23) and by weekday (Monday first).
HOUR_SHAPE = np.array([3, 2, 1.5, 1, 1, 1.5, 3, 6, 10, 13, 14, 14, 12, 13, 15, 16, 15, 13, 11, 10, 9, 8, 6, 4.5])
WEEKDAY_SHAPE = np.array([1.0, 1.05, 1.05, 1.0, 0.95, 0.55, 0.45])
LOCAL_OFFSET = timedelta(hours=8)  # the users' clock (Asia/Shanghai, no DST)
_TEXT_SOURCE = (
    "今天天气很好，我们一起去公园散步吧。The quick brown fox jumps over the lazy dog. "
    "欢迎使用语音合成服务，请在下方输入您想要转换的文本。Please hold while we connect your call. "
) * 20


@dataclass(frozen=True)
class SyntheticMonth:
    """Parameters of the generated data (all have sensible defaults)."""

    events: int = 100_000
    days: int = 30
    end: datetime | None = None  # exclusive; default: the start of the current UTC hour
    seed: int = 0
    chunk_size: int = 200_000
    texts: bool = True  # fill text_input (skip for speed in benchmarks)
    bad_hour_start: datetime | None = None  # default: 9 days before ``end``, at 14:00 UTC

    def resolved_end(self) -> datetime:
        end = self.end or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        return end if end.tzinfo else end.replace(tzinfo=timezone.utc)

    def resolved_bad_hour(self) -> datetime:
        if self.bad_hour_start is not None:
            bad = self.bad_hour_start
            return bad if bad.tzinfo else bad.replace(tzinfo=timezone.utc)
        return (self.resolved_end() - timedelta(days=9)).replace(hour=14, minute=0, second=0, microsecond=0)


def _timestamps(spec: SyntheticMonth, rng: np.random.Generator) -> np.ndarray:
    """Sorted event times in microseconds since the epoch (UTC)."""
    end = spec.resolved_end()
    start = end - timedelta(days=spec.days)
    hours = spec.days * 24
    hour_starts = np.array([start + timedelta(hours=h) for h in range(hours)])
    local = [t + LOCAL_OFFSET for t in hour_starts]
    weight = np.array([HOUR_SHAPE[t.hour] * WEEKDAY_SHAPE[t.weekday()] for t in local])
    per_hour = rng.multinomial(spec.events, weight / weight.sum())
    start_us = int(start.timestamp() * 1_000_000)
    base = start_us + np.repeat(np.arange(hours, dtype=np.int64) * 3_600_000_000, per_hour)
    offsets = rng.integers(0, 3_600_000_000, size=spec.events, dtype=np.int64)
    return np.sort(base + offsets)


def _names(names, codes: np.ndarray, keep: np.ndarray | None = None) -> pl.Series:
    """Strings by index, vectorised (numpy object arrays would cost a Python object per row)."""
    out = pl.Series(list(names), dtype=pl.Utf8).gather(codes)
    return out if keep is None else out.zip_with(pl.Series(keep), pl.Series([None] * len(out), dtype=pl.Utf8))


def _choice(rng: np.random.Generator, n: int, weights: tuple[float, ...]) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum())


def _chunk(spec: SyntheticMonth, ts_us: np.ndarray, first: int, rng: np.random.Generator) -> EventBatch:
    n = ts_us.size
    node = _choice(rng, n, NODE_WEIGHTS)
    version = _choice(rng, n, VERSION_WEIGHTS)
    control = _choice(rng, n, CONTROL_WEIGHTS)
    emotion = _choice(rng, n, EMOTION_WEIGHTS)
    text_length = np.clip(np.round(rng.lognormal(np.log(70), 0.75, n)), 1, 800).astype(np.int64)

    speed = (np.asarray(NODE_SPEED)[node] * np.asarray(VERSION_SPEED)[version]
             * np.asarray(EMOTION_SPEED)[emotion] * np.where(control == 0, 1.0, 1.06))
    latency = (350.0 + 14.0 * text_length) * speed * rng.lognormal(0.0, 0.18, n)
    audio = text_length * 190.0 * rng.lognormal(0.0, 0.1, n)

    fail_p = 0.006 + 0.01 * (text_length > 150) + 0.01 * (text_length > 400)
    bad_start = int(spec.resolved_bad_hour().timestamp() * 1_000_000)
    bad = (ts_us >= bad_start) & (ts_us < bad_start + 3_600_000_000) & (node == 2)
    fail_p = np.where(bad, 0.45, fail_p)
    latency = np.where(bad, latency * 4.0, latency)
    failed = rng.random(n) < fail_p
    error = np.where(bad, 0, _choice(rng, n, ERROR_WEIGHTS))
    # A failure stops the generation part-way: shorter latency, no audio, no stage times.
    latency = np.where(failed, latency * rng.uniform(0.05, 0.9, n), latency)

    shares = rng.dirichlet((55, 5, 25, 15), n) * (latency * 0.92)[:, None]
    ok = ~failed
    frame = pl.DataFrame({
        "request_id": np.arange(first, first + n, dtype=np.int64),
        "ts": ts_us,
        "status": _names(("success", "failed"), failed.astype(np.int64)),
        "level": _names(("INFO", "ERROR"), failed.astype(np.int64)),
        "emotion": _names(EMOTIONS, emotion, keep=control != 0),
        "emotion_control": _names(CONTROLS, control),
        "latency_ms": np.round(latency, 1),
        "text_length": text_length,
        "user_id": rng.integers(1, 5000, n),
        "error_type": _names([e[0] for e in ERRORS], error, keep=failed),
        "error_message": _names([e[1] for e in ERRORS], error, keep=failed),
        "audio_length_ms": np.where(ok, np.round(audio, 1), np.nan),
        "rtf": np.where(ok, np.round(latency / audio, 4), np.nan),
        "gpt_gen_ms": np.where(ok, np.round(shares[:, 0], 1), np.nan),
        "gpt_forward_ms": np.where(ok, np.round(shares[:, 1], 1), np.nan),
        "s2mel_ms": np.where(ok, np.round(shares[:, 2], 1), np.nan),
        "bigvgan_ms": np.where(ok, np.round(shares[:, 3], 1), np.nan),
        "node": _names(NODES, node),
        "model_version": _names(VERSIONS, version),
    }, strict=False)
    frame = frame.with_columns(
        pl.format("syn{}-{}", pl.lit(spec.seed), pl.col("request_id")).alias("request_id"),
        pl.from_epoch(pl.col("ts"), time_unit="us").alias("ts"),
        pl.col("user_id").cast(pl.Utf8),
        pl.col(pl.Float64).fill_nan(None),
    )
    if spec.texts:
        frame = frame.with_columns(
            pl.lit(_TEXT_SOURCE).str.slice(pl.col("text_length") % 97, pl.col("text_length")).alias("text_input")
        )
    return EventBatch(frame, constants={"model": MODEL, "source": "demo", "source_format": "synthetic"})


def generate(spec: SyntheticMonth | None = None, **params) -> Iterator[EventBatch]:
    """Yield the month as EventBatch chunks of ``chunk_size`` events, oldest first.

    ``generate(events=1_000_000, seed=3)`` is shorthand for ``generate(SyntheticMonth(...))``.
    """
    spec = spec or SyntheticMonth(**params)
    rng = np.random.default_rng(spec.seed)
    ts_us = _timestamps(spec, rng)
    for i, first in enumerate(range(0, spec.events, spec.chunk_size)):
        chunk_rng = np.random.default_rng([spec.seed, i])
        yield _chunk(spec, ts_us[first:first + spec.chunk_size], first, chunk_rng)

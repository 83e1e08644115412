"""Seed-format log lines with known totals, for tests that check counts and sums exactly."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

EMOTIONS = ["happy", "sad", "angry", "calm", "兴奋", "愤怒", "温柔", "surprised"]


@dataclass
class Expected:
    events: int = 0
    failed: int = 0
    latency_ms: float = 0.0
    text_length: int = 0
    lines: list[str] = field(default_factory=list)

    def add(self, other: "Expected") -> "Expected":
        return Expected(self.events + other.events, self.failed + other.failed,
                        self.latency_ms + other.latency_ms, self.text_length + other.text_length,
                        self.lines + other.lines)


def text_lines(n: int, seed: int = 1, start: datetime = datetime(2025, 3, 1)) -> Expected:
    rng = random.Random(seed)
    exp = Expected()
    t = start
    for _ in range(n):
        t += timedelta(milliseconds=rng.randrange(1, 3000))
        ok = rng.random() > 0.1
        tl = rng.randint(1, 600)
        tenths = rng.randint(1, 120)
        ms = f",{t.microsecond // 1000:03d}" if rng.random() < 0.5 else ""
        exp.lines.append(
            f"[{t:%Y-%m-%d %H:%M:%S}{ms}] {'INFO' if ok else 'ERROR'} - TextLen={tl}, "
            f"Emotion={rng.choice(EMOTIONS)}, Duration={tenths / 10:.1f}s, Success={ok}\n"
        )
        exp.events += 1
        exp.failed += not ok
        exp.latency_ms += tenths * 100
        exp.text_length += tl
    return exp


def write(path, exp: Expected, mode: str = "w") -> None:
    with open(path, mode, encoding="utf-8", newline="") as f:
        f.writelines(exp.lines)

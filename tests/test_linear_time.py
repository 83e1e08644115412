"""Untrusted text is read in linear time: a hostile input 4x longer costs about 4x, not 16x or 64x.

Each case times (process CPU time, median of 5) what an import runs on one hostile line of n
and of 4n characters: the format's parse of a chunk (through the import's parser guard), format
detection on a file's head, and PII masking. Linear code gives a ratio near 4 (less while fixed
costs dominate), quadratic 16, cubic 64; the bound, 10, fails all of those and leaves room for
a shared, noisy machine. A case already slow on a short line fails at once instead of running
for hours (before the fix, an indextts line with 2,000 spaces took 4 s, and 30,000 would take
days).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import pytest

from voxtrail.event import EventBatch
from voxtrail.sources.files.salvage import parse_chunk
from voxtrail.sources.formats import Chunk, ParseContext
from voxtrail.sources.formats.detect import FORMATS, detect_format
from voxtrail.transforms.mask import Masker, _custom_rule

PROBE = 1_000  # characters: linear code needs well under a millisecond
PROBE_BUDGET = 0.1  # seconds
SIZES = (25_000, 100_000)
BUDGET = 1.0  # seconds for the larger size (linear code: a few milliseconds)
MAX_RATIO = 10.0
NOISE_FLOOR = 0.004  # seconds: below this the ratio is mostly noise, so the small time is raised to it


def cpu_seconds(run: Callable[[], object], budget: float) -> float:
    """Median of 5 runs; the first run's time if that is over ``budget`` (no need for more)."""
    times = []
    for _ in range(5):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
        if times[-1] > budget:
            return times[-1]
    return statistics.median(times)


def assert_linear(make: Callable[[int], Callable[[], object]], sizes: tuple[int, int] = SIZES) -> None:
    first = make(PROBE)
    first()  # warm-up: lazy imports and compiled patterns are not the input's cost
    probe = cpu_seconds(first, PROBE_BUDGET)
    assert probe < PROBE_BUDGET, f"{PROBE:,} characters took {probe:.3f} s: superlinear"
    small = cpu_seconds(make(sizes[0]), BUDGET)
    assert small < BUDGET, f"{sizes[0]:,} characters took {small:.3f} s"
    large = cpu_seconds(make(sizes[1]), BUDGET)
    assert large < BUDGET, f"{sizes[1]:,} characters took {large:.3f} s"
    ratio = large / max(small, NOISE_FLOOR)
    assert ratio < MAX_RATIO, f"{sizes[0]:,} -> {sizes[1]:,} characters: {small:.4f} s -> {large:.4f} s (x{ratio:.1f})"


def fill(unit: str, n: int) -> str:
    return (unit * (n // len(unit) + 1))[:n]


STAMP = "[2025-03-01 00:00:01] INFO - "
GOOD_TEXT = STAMP + "TextLen=75, Emotion=sad, Duration=7.9s, Success=True"
START = "Emo control mode:2,weight:0.65,vec:None"

#: (format, hostile line builder): keywords and separators of the format around long runs.
HOSTILE_LINES = {
    "text": {
        "spaces after Emotion=": lambda n: STAMP + "TextLen=1, Emotion=" + " " * n,
        "spaces around every =": lambda n: "[2025-03-01 00:00:01]" + fill(" TextLen = 1 , Emotion = ", n),
        "Emotion= repeated": lambda n: STAMP + "TextLen=1, " + fill("Emotion=", n) + ", Duration=1s",
        "digits": lambda n: STAMP + "TextLen=" + "1" * n,
        "commas and spaces": lambda n: STAMP + "TextLen=1, Emotion=a" + fill(" ,", n) + " Duration=1s, Success=",
        "nested brackets": lambda n: "[" * n + "]" * n,
        "duration digits": lambda n: STAMP + "TextLen=1, Emotion=a, Duration=1." + "1" * n + "x",
    },
    "indextts": {
        "spaces after weight:": lambda n: "Emo control mode:1,weight:" + " " * n,
        "spaces after mode:": lambda n: "Emo control mode:" + " " * n + "1",
        "spaces in vec": lambda n: "Emo control mode:1,weight:0.5,vec:" + " " * n + "x",
        "nested vec": lambda n: "Emo control mode:2,weight:0.5,vec:" + "[" * n,
        "long vec": lambda n: "Emo control mode:2,weight:0.5,vec:[" + fill("0.1, ", n) + "]",
        "wav path of spaces": lambda n: START + "\n>> wav file saved to: a" + " " * n + "x",
        "wav path of digits": lambda n: START + "\n>> wav file saved to: " + fill("1234567890.", n) + "wav",
        "stage time dots": lambda n: START + "\n>> gpt_gen_time: " + fill("1.", n) + " second",
        "traceback final line": lambda n: START + "\nTraceback (most recent call last):\n" + fill("a.", n) + "!",
        "detected vectors": lambda n: START + "\ndetected emotion vectors from text: {" + fill("'a': 1, ", n),
    },
    "jsonl": {
        "spaces in time": lambda n: '{"time": "2025-03-01T00:00:00' + " " * n + '", "success": true}',
        "nested arrays": lambda n: "[" * n,
        "keys repeated": lambda n: "{" + fill('"time": 1, ', n) + '"success": true}',
        "long emotion": lambda n: '{"time": "2025-03-01T00:00:00", "success": true, "emotion": "' + "a" * n + '"}',
    },
    "audit": {
        "spaces in created_at": lambda n: '{"request_id": "r", "status": "success", "created_at": "2025' + " " * n + '"}',
        "digits": lambda n: '{"request_id": "r", "status": "success", "text_length": ' + "1" * n + "}",
    },
}
CASES = [(fmt, name) for fmt, lines in HOSTILE_LINES.items() for name in lines]


@pytest.mark.parametrize("fmt,case", CASES, ids=[f"{f}: {c}" for f, c in CASES])
def test_parse_is_linear_in_a_hostile_line(fmt, case):
    good = {"text": GOOD_TEXT, "indextts": "", "jsonl": '{"time": "2025-03-01T00:00:00", "success": true}',
            "audit": '{"request_id": "a", "status": "success", "created_at": "2025-03-01 00:00:00"}'}[fmt]

    def make(n: int):
        data = (good + "\n" + HOSTILE_LINES[fmt][case](n) + "\n").encode()

        def run():
            result, _ = parse_chunk(FORMATS[fmt], Chunk(0, data, final=True), ParseContext("s", "x.log", "UTC", final=True))
            assert result.consumed == len(data)
        return run

    assert_linear(make)


DETECT_CASES = [("text", "spaces after Emotion="), ("text", "spaces around every ="), ("indextts", "spaces after weight:"),
                ("indextts", "spaces after mode:"), ("jsonl", "keys repeated")]


@pytest.mark.parametrize("fmt,case", DETECT_CASES, ids=[f"{f}: {c}" for f, c in DETECT_CASES])
def test_detection_is_linear_in_a_hostile_head(fmt, case):
    def make(n: int):
        head = (HOSTILE_LINES[fmt][case](n) + "\n").encode() * 2
        return lambda: detect_format(head)

    assert_linear(make, sizes=(8_000, 32_000))  # the importer shows detection 64 KiB at most


CONSOLE_NOISE = {"console marker": lambda n: ">> " + "a" * n, "time marker": lambda n: ">> " + fill("a_time", n)}


@pytest.mark.parametrize("case", CONSOLE_NOISE)
def test_indextts_sniff_is_linear(case):
    def make(n: int):
        head = [CONSOLE_NOISE[case](n)] * 2
        return lambda: FORMATS["indextts"].sniff(head)

    assert_linear(make)


#: Texts built to make the built-in PII rules try many starts or long runs.
HOSTILE_TEXTS = {
    "digits": lambda n: "1" * n,
    "digits and spaces": lambda n: fill("1 ", n),
    "digits and dashes": lambda n: fill("1-", n),
    "digit then spaces": lambda n: "1" + " " * n + "x",
    "dotted digits": lambda n: fill("1.", n),
    "almost addresses": lambda n: fill("1.1.1.", n),
    "at signs": lambda n: fill("a@", n),
    "long domain label": lambda n: "a@" + "a" * n,
    "dashed domain": lambda n: "x@a" + "-" * n + "1",
    "many labels": lambda n: "a@" + fill("ab.", n) + "1",
    "local part of dots": lambda n: fill("a.", n) + "@",
    "card groups": lambda n: fill("4111 ", n),
    "phone groups": lambda n: fill("138 1234 5678 ", n),
    "ID-like runs": lambda n: fill("11010519491231002X ", n),
    "country codes": lambda n: fill("+86 ", n),
    "mixed separators": lambda n: fill("a1.-@ ", n),
    "Chinese and digits": lambda n: fill("中1", n),
}


@pytest.mark.parametrize("case", HOSTILE_TEXTS)
def test_builtin_masking_is_linear(case):
    masker = Masker()

    def make(n: int):
        text = HOSTILE_TEXTS[case](n)
        return lambda: masker.mask_text(text)

    assert_linear(make)


def test_masking_a_batch_is_linear():
    masker = Masker()

    def make(n: int):
        batch = EventBatch.from_records([{"text_input": HOSTILE_TEXTS[case](n)} for case in HOSTILE_TEXTS])
        return lambda: masker(batch)

    assert_linear(make)


def configured(pattern: str) -> Masker:
    return Masker(rules=(_custom_rule(0, {"name": "custom", "pattern": pattern, "replacement": "*"}),))


#: Patterns that backtrack polynomially in Python's re on the text beside them.
BACKTRACKING = {
    "adjacent stars": (r"^a*a*a*b", lambda n: "a" * n),
    "spaces around a lazy group": (r"^\s*(.*?)\s*,", lambda n: "a" + " " * n + "b"),
    "words then end": (r"\w+\s?\w+$", lambda n: fill("ab", n) + "!"),
}


@pytest.mark.parametrize("case", BACKTRACKING)
def test_configured_mask_patterns_are_linear(case):
    pattern, text_of = BACKTRACKING[case]
    masker = configured(pattern)

    def make(n: int):
        text = text_of(n)
        return lambda: masker.mask_text(text)

    assert_linear(make)


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(a|aa)+b", r"^(\w+\s?)*$",
                                     r"^([a-zA-Z0-9])(([\-.]|[_]+)?([a-zA-Z0-9]+))*(@)"])
def test_configured_mask_patterns_are_not_exponential(pattern):
    """The classic ReDoS patterns: each 2 more characters double Python's time (2^26 steps for
    the text below, seconds); RE2 takes microseconds."""
    masker = configured(pattern)
    text = "a" * 26 + "!"
    assert cpu_seconds(lambda: masker.mask_text(text), 0.05) < 0.05


@pytest.mark.parametrize("value", [lambda n: "1" + " " * n + "x", lambda n: "1" * n + " " * n + "dx"])
def test_ages_are_parsed_in_linear_time(value):
    """Ages come from flags, variables and the TOML file: a pasted value of any length is one
    error line, quickly (two runs of spaces around an optional unit were quadratic)."""
    from voxtrail.config import ConfigError
    from voxtrail.store.purge import parse_age

    def make(n: int):
        text = value(n)

        def run():
            with pytest.raises(ConfigError):
                parse_age(text, "--audit")
        return run

    assert_linear(make)

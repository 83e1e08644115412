"""Property tests of the text and indextts parsers, format detection and the chunk reader.

Generated logs mix good records with hostile lines (long runs of spaces, digits, separators,
nested brackets, the format's own keywords repeated, invalid UTF-8, CR, BOM). Invariants: the
parser never raises; every line is part of an event, a reject or counted as skipped; offsets
are exact; the same bytes in one chunk or in many give the same result; parsing is
deterministic. The budget is the profile in conftest.py.
"""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from unittest import mock

import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from voxtrail import transforms
from voxtrail.sources.files import reader
from voxtrail.sources.files.importer import Importer
from voxtrail.sources.formats import Chunk, ParseContext, ParseResult
from voxtrail.sources.formats.detect import FORMATS, detect_format
from voxtrail.sources.formats.indextts import START
from voxtrail.store import Store

TEXT, IDX = FORMATS["text"], FORMATS["indextts"]

# -- hostile lines, shared by every format -----------------------------------------------------

KEYWORDS = ["TextLen=", "Emotion=", "Duration=", "Success=True", ", ", "[", "]", " - ", "=", ",",
            "Emo control mode:", "weight:", "vec:", ">> ", "wav file saved to: ", "Traceback (most recent call last):",
            "_time: ", "seconds", "{", "}", '"', "0", "9", ".", " ", "\t", "\ufeff", "中", "٧", "\ufffd"]


@st.composite
def hostile_line(draw) -> bytes:
    kind = draw(st.sampled_from(["run", "keywords", "brackets", "bytes", "text"]))
    if kind == "run":
        unit = draw(st.sampled_from([" ", "1", ",", ".", "=", "-", "[", "Emotion=", "weight:", "1.", ", "]))
        prefix = draw(st.sampled_from(["", "[2025-03-01 00:00:01] INFO - TextLen=1, Emotion=", "Emo control mode:1,weight:",
                                       ">> wav file saved to: ", ">> gpt_gen_time: "]))
        return (prefix + unit * draw(st.integers(1, 3000))).encode()
    if kind == "keywords":
        return "".join(draw(st.lists(st.sampled_from(KEYWORDS), max_size=40))).encode()
    if kind == "brackets":
        depth = draw(st.integers(1, 2000))
        return ("Emo control mode:2,weight:0.5,vec:" + "[" * depth + "]" * draw(st.integers(0, depth))).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b"")
    return draw(st.text(max_size=80)).replace("\n", "").encode("utf-8", "surrogatepass")


def join(lines: list[bytes], crlf: list[bool]) -> bytes:
    return b"".join(line + (b"\r\n" if crlf[i % len(crlf)] else b"\n") for i, line in enumerate(lines)) if lines else b""


def line_starts(data: bytes) -> list[int]:
    starts, at = [], 0
    for raw in data.split(b"\n")[:-1]:
        starts.append(at)
        at += len(raw) + 1
    return starts


def drive(fmt, data: bytes, cuts: list[int], tz: str = "UTC") -> tuple[list[ParseResult], int]:
    """Parse as the importer does: chunks end at line boundaries (``cuts``, as line numbers);
    what a chunk did not consume comes again with the next one; the last chunk is final."""
    starts = line_starts(data)
    ends = sorted({starts[c] for c in cuts if 0 < c < len(starts)} | {len(data)})
    state: dict = {}
    position, results = 0, []
    for end in ends:
        if end <= position:
            continue
        final = end == len(data)
        result = fmt.parse(Chunk(position, data[position:end], final=final), ParseContext("s", "f.log", tz, state, final))
        assert position <= result.consumed <= end
        results.append(result)
        position = result.consumed
    return results, position


def combined(results: list[ParseResult]) -> tuple[pl.DataFrame, list[tuple], int]:
    frames = [r.batch.frame for r in results]
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema={"source_offset": pl.Int64})
    rejects = [(x.offset, x.reason, x.excerpt) for r in results for x in r.batch.rejects]
    return frame, rejects, sum(r.skipped for r in results)


def assert_same(one: list[ParseResult], many: list[ParseResult]) -> None:
    a, b = combined(one), combined(many)
    assert a[0].sort("source_offset").equals(b[0].sort("source_offset")), (a[0], b[0])
    assert sorted(a[1]) == sorted(b[1]) and a[2] == b[2]


def parse_whole(fmt, lines: list[bytes], crlf: list[bool]):
    """The log of these lines parsed in one final chunk: (data, line starts, results, frame,
    rejects, skipped, event offsets)."""
    data = join(lines, crlf)
    one, end = drive(fmt, data, [])
    assert end == len(data)
    frame, rejects, skipped = combined(one)
    offsets = frame["source_offset"].to_list() if frame.height else []
    return data, line_starts(data), one, frame, rejects, skipped, offsets


# -- text --------------------------------------------------------------------------------------

EMOTION_CHARS = st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=",\ufffd\ufeff")


@dataclass
class TextRecord:
    line: bytes
    ts: datetime
    level: str
    emotion: str
    latency_ms: float
    text_length: int
    success: bool


@st.composite
def text_record(draw) -> TextRecord:
    ts = draw(st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31))).replace(microsecond=0)
    frac_kind = draw(st.sampled_from(["", ",ms", ".ms", ".us"]))
    micros = {"": 0, ",ms": draw(st.integers(0, 999)) * 1000, ".ms": draw(st.integers(0, 999)) * 1000,
              ".us": draw(st.integers(0, 999_999))}[frac_kind]
    frac = {"": "", ",ms": f",{micros // 1000:03d}", ".ms": f".{micros // 1000:03d}", ".us": f".{micros:06d}"}[frac_kind]
    level = draw(st.sampled_from(["INFO", "ERROR", "WARNING", "DEBUG"]))
    emotion = draw(st.text(EMOTION_CHARS, min_size=1, max_size=20))
    whole, decimals = draw(st.integers(0, 999_999_999)), draw(st.text("0123456789", max_size=6))
    duration = f"{whole}.{decimals}" if decimals else str(whole)
    text_length, success = draw(st.integers(0, 999_999_999)), draw(st.booleans())
    lenient = draw(st.booleans())
    if lenient:  # the spacing and spelling the lenient pattern admits
        sp = draw(st.sampled_from(["", " ", "  ", "\t"]))
        flag = draw(st.sampled_from(["true", "false", "TRUE", "FALSE", "1", "0", "True"]))
        success = flag.lower() in ("true", "1")
        line = (f"{sp}[{sp}{ts:%Y-%m-%d}{draw(st.sampled_from([' ', 'T']))}{ts:%H:%M:%S}{frac}{sp}]{sp}"
                f"{level.lower()}{sp}-{sp}TextLen{sp}={sp}{text_length}{sp},{sp}Emotion{sp}={sp}{emotion}{sp},"
                f"{sp}Duration{sp}={sp}{duration}{sp}s{sp},{sp}Success{sp}={sp}{flag}{sp}")
    else:
        line = (f"[{ts:%Y-%m-%d %H:%M:%S}{frac}] {level} - TextLen={text_length}, Emotion={emotion}, "
                f"Duration={duration}s, Success={success}")
    return TextRecord(line.encode(), ts + timedelta(microseconds=micros), level, emotion, float(duration) * 1000.0,
                      text_length, success)


@st.composite
def mutated(draw, lines) -> bytes:
    """A good line with one character replaced, doubled or dropped: the shape, nearly."""
    line = draw(lines).line.decode()
    at = draw(st.integers(0, len(line) - 1))
    how = draw(st.sampled_from(["replace", "double", "drop", "digit"]))
    digits = [i for i, ch in enumerate(line) if ch.isdigit()]
    if how == "digit" and digits:  # another script's digit where a number is
        at = digits[draw(st.integers(0, len(digits) - 1))]
        line = line[:at] + draw(st.sampled_from(["٧", "１", "߃"])) + line[at + 1:]
    elif how == "replace":
        line = line[:at] + draw(st.sampled_from(["٧", "１", " ", ",", "=", "]", "[", "\ufffd", "\x00", "\r", "a"])) + line[at + 1:]
    elif how == "double":
        line = line[:at] + line[at] * draw(st.integers(2, 500)) + line[at + 1:]
    else:
        line = line[:at] + line[at + 1:]
    return line.encode()


TEXT_LINE = st.one_of(text_record(), hostile_line(), mutated(text_record()),
                      st.sampled_from([b"", b"   ", b"\t", b"\xef\xbb\xbf"]))


@given(items=st.lists(TEXT_LINE, max_size=30), crlf=st.lists(st.booleans(), min_size=1, max_size=3),
       cuts=st.lists(st.integers(0, 30), max_size=5))
def test_text_every_line_accounted_for_in_any_chunking(items, crlf, cuts):
    lines = [x.line if isinstance(x, TextRecord) else x for x in items]
    data, starts, one, frame, rejects, skipped, offsets = parse_whole(TEXT, lines, crlf)
    assert sorted(offsets + [r[0] for r in rejects]) == sorted(set(offsets + [r[0] for r in rejects]))
    assert set(offsets) | {r[0] for r in rejects} <= set(starts)
    assert len(offsets) + len(rejects) + skipped == len(lines)
    # Blank lines are skipped (polars' whitespace is Unicode's, Python's adds U+001C-U+001F).
    decoded = [line.decode("utf-8", "replace").removesuffix("\r") for line in lines]
    assert sum(not x.strip(" \t") for x in decoded) <= skipped <= sum(not x.strip() for x in decoded)
    assert all(r[1].startswith("text: ") for r in rejects)
    if frame.height:
        assert sum(frame[c].null_count() for c in ("ts", "latency_ms", "text_length", "status")) == 0
    events = {row["source_offset"]: row for row in frame.iter_rows(named=True)} if frame.height else {}
    for item, start in zip(items, starts):
        if isinstance(item, TextRecord):
            ev = events[start]
            assert (ev["ts"], ev["level"], ev["text_length"], ev["status"]) == (
                item.ts, item.level, item.text_length, "success" if item.success else "failed")
            assert ev["emotion"] == item.emotion and abs(ev["latency_ms"] - item.latency_ms) <= 1e-6 * item.latency_ms
    assert_same(one, drive(TEXT, data, [])[0])  # deterministic
    assert_same(one, drive(TEXT, data, cuts)[0])


# -- indextts ----------------------------------------------------------------------------------

@st.composite
def indextts_segment(draw) -> list[bytes]:
    kind = draw(st.sampled_from(["ok", "ok", "failed", "interrupted", "noise", "hostile", "blank"]))
    weight = draw(st.sampled_from(["0.65", "1", " 0.5 ", "inf", "1.2.3", "", "9" * 400]))
    vec = draw(st.sampled_from(["None", "[0.1, 0.2, 0.0, 0.0, 0.3, 0.0, 0.0, 0.4]", "[1, 2]", "[[[", "'x'", "[1e999, 0, 0, 0, 0, 0, 0, 0]"]))
    start = f"Emo control mode:{draw(st.integers(0, 4))},weight:{weight},vec:{vec}".encode()
    if kind == "ok":
        stage = draw(st.sampled_from(["2.51", "0", "1.2.3", "." * 5, "9" * 400]))
        ts = draw(st.integers(10**8, 10**11 - 1))
        lines = [start, b">> starting inference...", f">> gpt_gen_time: {stage} seconds".encode(),
                 b">> Total inference time: 4.57 seconds", b">> RTF: 0.3653"]
        if draw(st.booleans()):
            lines.insert(2, b"detected emotion vectors from text: {'happy': 0.9, 'calm': 0.1}")
        return lines + [f">> wav file saved to: outputs/spk_{ts}.wav".encode()]
    if kind == "failed":
        final = draw(st.sampled_from([b"torch.OutOfMemoryError: CUDA out of memory", b"RuntimeError", b"a" * 3000 + b"!",
                                      b"ValueError:" + b" " * 2000]))
        return [start, b"Traceback (most recent call last):", b'  File "x.py", line 1, in f', final]
    if kind == "interrupted":
        return [start, b">> starting inference..."]
    if kind == "noise":
        return [draw(st.sampled_from([b">> GPT weights restored from: gpt.pth", b"* Running on local URL:  http://0.0.0.0:7860",
                                      b"torch.Size([1, 2])", b"Loading model..."]))]
    if kind == "blank":
        return [b""]
    return [draw(hostile_line())]


@given(segments=st.lists(indextts_segment(), max_size=12), crlf=st.lists(st.booleans(), min_size=1, max_size=2),
       cuts=st.lists(st.integers(0, 80), max_size=5))
def test_indextts_every_block_an_event_or_a_reject_in_any_chunking(segments, crlf, cuts):
    lines = [line for segment in segments for line in segment]
    data, starts, one, frame, rejects, skipped, offsets = parse_whole(IDX, lines, crlf)
    openers = [s for s, line in zip(starts, lines)
               if START.match(line.decode("utf-8", "replace").rstrip("\r").lstrip("\ufeff"))]
    # Every block opener ends as exactly one event or one reject, and nothing else does.
    assert sorted(offsets + [r[0] for r in rejects]) == openers
    assert skipped <= len(lines) - len(openers)
    if frame.height:
        assert frame["ts"].null_count() == 0
        assert all(v is None or abs(v) < 1e300 for c in ("emo_alpha", "gpt_gen_ms", "rtf") for v in frame[c].to_list())
    assert_same(one, drive(IDX, data, [])[0])
    assert_same(one, drive(IDX, data, cuts)[0])


# -- detection ---------------------------------------------------------------------------------

@given(lines=st.lists(hostile_line(), max_size=20), crlf=st.lists(st.booleans(), min_size=1, max_size=2),
       bom=st.booleans())
def test_detection_of_any_head_never_raises_and_is_deterministic(lines, crlf, bom):
    head = (b"\xef\xbb\xbf" if bom else b"") + join(lines, crlf)
    found = detect_format(head)
    assert found is None or found in FORMATS
    assert detect_format(head) == found


@given(records=st.lists(text_record(), min_size=1, max_size=20), crlf=st.lists(st.booleans(), min_size=1, max_size=2),
       bom=st.booleans())
def test_a_text_log_is_detected_as_text(records, crlf, bom):
    head = (b"\xef\xbb\xbf" if bom else b"") + join([r.line for r in records], crlf)
    assert detect_format(head) == "text"


@given(segments=st.lists(indextts_segment(), max_size=8))
def test_an_indextts_log_with_a_block_is_detected_as_indextts(segments):
    lines = [b"Emo control mode:0,weight:0.65,vec:None"] + [line for s in segments for line in s]
    assert detect_format(join(lines, [False])) == "indextts"


# -- the chunk reader --------------------------------------------------------------------------

READER_LINE = st.one_of(hostile_line(), st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
                        st.sampled_from([b"", b"\r", b"\xef\xbb\xbf", b"\xff\xfe", b"x" * 700]))


@settings(max_examples=40)
@given(lines=st.lists(READER_LINE, max_size=25), crlf=st.lists(st.booleans(), min_size=1, max_size=2),
       tail=st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), chunk_bytes=st.integers(1, 600),
       compressed=st.booleans())
def test_reader_hands_out_each_complete_line_once_with_exact_offsets(tmp_path_factory, lines, crlf, tail, chunk_bytes,
                                                                       compressed):
    content = join(lines, crlf) + tail  # tail: a last line without its newline
    path = tmp_path_factory.mktemp("r") / ("a.log.gz" if compressed else "a.log")
    path.write_bytes(gzip.compress(content) if compressed else content)
    with reader.open_content(str(path)) as f:
        rd = reader.ChunkReader(f, 0, complete=compressed, chunk_bytes=chunk_bytes)
        chunks = list(rd)
    covered = b"".join(c.data for c in chunks)
    complete = content if compressed else content[: content.rfind(b"\n") + 1]
    assert covered == complete and rd.position == len(complete)
    position = 0
    for c in chunks:
        assert c.start == position and (c.data.endswith(b"\n") or c.final)
        position = c.end
        lines_of, offsets = c.lines_and_offsets()
        raw = c.data[:-1].split(b"\n") if c.data.endswith(b"\n") else c.data.split(b"\n")
        assert offsets.to_list() == c.line_offsets().tolist() == [c.start + s for s in line_starts(c.data + b"\n")][:len(raw)]
        expected = [r.decode("utf-8", "replace") for r in raw]
        assert lines_of.to_list() == [x[:-1] if x.endswith("\r") else x for x in expected]


@settings(max_examples=25)
@given(lengths=st.lists(st.integers(0, 900), min_size=1, max_size=12), chunk_bytes=st.integers(16, 400))
def test_reader_skips_lines_too_long_to_hold_and_keeps_the_rest(tmp_path_factory, lengths, chunk_bytes):
    lines = [bytes([97 + i % 26]) * n for i, n in enumerate(lengths)]
    content = b"".join(line + b"\n" for line in lines)
    path = tmp_path_factory.mktemp("r") / "a.log"
    path.write_bytes(content)
    with mock.patch.object(reader, "MAX_LINE_BYTES", 300), reader.open_content(str(path)) as f:
        rd = reader.ChunkReader(f, 0, complete=False, chunk_bytes=chunk_bytes)
        kept = {o: line for c in rd for line, o in zip(*(s.to_list() for s in c.lines_and_offsets()))}
    skipped = dict(rd.oversized)
    starts = line_starts(content)
    # Each line is handed out whole or skipped (when it is longer than the limit), never both.
    assert sorted([*kept, *skipped]) == starts and rd.position == len(content)
    for start, line in zip(starts, lines):
        if start in kept:
            assert kept[start] == line.decode()
        else:
            assert len(line) > 300 and skipped[start] == line[:200]
    assert all(len(line) < 300 + chunk_bytes + 1 for line in kept.values())


# -- through the importer, into a database -------------------------------------------------------

@pytest.fixture
def sqlite_store(sqlite_url):
    store = Store.open(sqlite_url)
    yield store
    store.close()


@settings(max_examples=15)
@given(items=st.lists(TEXT_LINE, min_size=1, max_size=40), chunk_bytes=st.integers(64, 2048))
def test_import_in_small_chunks_stores_what_one_chunk_parses_to(sqlite_store, tmp_path_factory, items, chunk_bytes):
    first = f"[2025-01-01 00:00:00] INFO - TextLen=1, Emotion={uuid.uuid4().hex}, Duration=1s, Success=True"
    lines = [first.encode(), *(x.line if isinstance(x, TextRecord) else x for x in items)]
    data = join(lines, [False])
    path = tmp_path_factory.mktemp("imp") / "tts.log"
    path.write_bytes(data)
    summary = Importer(sqlite_store, fmt="text", tz="UTC", chunk_bytes=chunk_bytes).run([str(path)])
    stream = summary.files[0].stream_id
    reference = transforms.apply(transforms.default_chain(sqlite_store.settings),
                                 TEXT.parse(Chunk(0, data), ParseContext(stream, str(path), "UTC")).batch)
    with sqlite_store.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT source_offset, request_id, status, emotion, text_length FROM tts_events "
                                      "WHERE source_file = :p ORDER BY source_offset"), {"p": str(path)}).all()
        rejected = conn.execute(sa.text("SELECT source_offset, reason FROM tts_rejects WHERE stream_id = :s "
                                        "ORDER BY source_offset"), {"s": stream}).all()
    expected = reference.frame.select("source_offset", "request_id", "status", "emotion", "text_length").sort(
        "source_offset").rows()
    assert [tuple(r) for r in stored] == expected
    assert [tuple(r) for r in rejected] == sorted((r.offset, r.reason) for r in reference.rejects)
    assert summary.total("bytes_read") == len(data) and summary.total("skipped") == TEXT.parse(
        Chunk(0, data), ParseContext(stream, str(path), "UTC")).skipped

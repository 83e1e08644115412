import random
from datetime import datetime

import polars as pl

from voxtrail.sources.formats import Chunk, ParseContext
from voxtrail.sources.formats.detect import FORMATS

TEXT = FORMATS["text"]
SAMPLES = "/work/shared/samples/"


def ctx(tz="UTC", stream="s1"):
    return ParseContext(stream, "x.log", tz)


def make(n, seed=0):
    rnd = random.Random(seed)
    lines, lat, failed, tl = [], 0, 0, 0
    for i in range(n):
        ok = rnd.random() < 0.9
        ms = f",{rnd.randint(0, 999):03d}" if i % 3 == 0 else ""
        d, t = rnd.randint(1, 150), rnd.randint(1, 600)
        emo = rnd.choice(["happy", "sad", "愤怒", "开心", "平静 温柔"])
        lines.append(f"[2025-03-01 00:{i // 60 % 60:02d}:{i % 60:02d}{ms}] {'INFO' if ok else 'ERROR'} - "
                     f"TextLen={t}, Emotion={emo}, Duration={d / 10}s, Success={ok}\n")
        lat += d * 100
        failed += not ok
        tl += t
    return "".join(lines).encode(), lat, failed, tl


def test_counts_and_sums_exact():
    data, lat, failed, tl = make(5000)
    r = TEXT.parse(Chunk(0, data), ctx())
    f = r.batch.frame
    assert f.height == 5000 and not r.batch.rejects and r.consumed == len(data)
    assert round(f["latency_ms"].sum()) == lat
    assert (f["status"] == "failed").sum() == failed
    assert f["text_length"].sum() == tl
    assert f["ts"].dtype == pl.Datetime("us") and f["ts"].null_count() == 0
    assert r.batch.constants == {"source": "file", "source_format": "text", "source_file": "x.log"}


def test_fields_ms_chinese_and_lenient():
    data = ("[2025-03-01 00:00:01,123] ERROR - TextLen=5, Emotion=愤怒, Duration=10s, Success=False\r\n"
            "  [2025-03-01T00:00:02.5]  warning -TextLen = 7 , Emotion= calm one ,Duration=1.5 s, Success=true\n"
            "[2025-03-01 00:00:03.000001] INFO - TextLen=1, Emotion=x, Duration=0.25s, Success=1\n").encode()
    f = TEXT.parse(Chunk(10, data), ctx()).batch.frame
    assert f["ts"].to_list() == [datetime(2025, 3, 1, 0, 0, 1, 123000), datetime(2025, 3, 1, 0, 0, 2, 500000),
                                 datetime(2025, 3, 1, 0, 0, 3, 1)]
    assert f["emotion"].to_list() == ["愤怒", "calm one", "x"]
    assert f["status"].to_list() == ["failed", "success", "success"]
    assert f["level"].to_list() == ["ERROR", "WARNING", "INFO"]
    assert f["latency_ms"].to_list() == [10000.0, 1500.0, 250.0]
    assert f["source_offset"].to_list()[0] == 10


def test_rejects_with_offsets_and_reasons():
    good = b"[2025-03-01 00:00:01] INFO - TextLen=75, Emotion=sad, Duration=7.9s, Success=True\n"
    bad = [b"garbage\n", good[:40] + b"\n", b"[2025-03-01 00:00:01] INFO - TextLen=7, Emotion=\xff\xfe, Duration=1s, Success=True\n",
           b"[" + b"x" * (1 << 20) + b"]\n", b"[2025-13-01 00:00:01] INFO - TextLen=75, Emotion=sad, Duration=7.9s, Success=True\n"]
    data, offsets = b"", []
    for b in bad:
        data += good + b"   \n"
        offsets.append(len(data))
        data += b
    data += good
    r = TEXT.parse(Chunk(1000, data), ctx())
    assert r.batch.frame.height == 6 and r.skipped == 5
    rej = r.batch.rejects
    assert [x.offset for x in rej] == [o + 1000 for o in offsets]
    assert rej[0].reason.startswith("text: no match for [time] LEVEL - TextLen=")
    assert rej[1].reason.startswith("text: no match") and rej[1].excerpt == good[:40]
    assert rej[2].reason == "text: invalid UTF-8"
    assert len(rej[3].excerpt) == 200
    assert rej[4].reason.startswith("text: invalid timestamp '2025-13-01 00:00:01'")


def test_time_zone_and_request_ids():
    data = b"[2025-03-01 08:00:00] INFO - TextLen=1, Emotion=a, Duration=1s, Success=True\n"
    f = TEXT.parse(Chunk(0, data), ctx("Asia/Shanghai")).batch.frame
    assert f["ts"].to_list() == [datetime(2025, 3, 1, 0, 0)]
    big, *_ = make(100)
    a = TEXT.parse(Chunk(0, big), ctx()).batch.frame
    b = TEXT.parse(Chunk(0, big), ctx()).batch.frame
    c = TEXT.parse(Chunk(0, big), ctx(stream="s2")).batch.frame
    assert a["request_id"].to_list() == b["request_id"].to_list()
    assert a["request_id"].n_unique() == 100
    assert not set(a["request_id"]) & set(c["request_id"])


def test_dst_gap_rejected():
    data = b"[2025-03-09 02:30:00] INFO - TextLen=1, Emotion=a, Duration=1s, Success=True\n"
    r = TEXT.parse(Chunk(0, data), ctx("America/New_York"))
    assert r.batch.frame.height == 0 and "nonexistent" in r.batch.rejects[0].reason


def test_sample_file():
    data = open(SAMPLES + "tts.log", "rb").read()
    r = TEXT.parse(Chunk(0, data, final=True), ctx())
    assert r.batch.frame.height == 300 and not r.batch.rejects
    assert (r.batch.frame["status"] == "failed").sum() == sum(b"Success=False" in x for x in data.splitlines())


def test_digits_of_other_scripts_are_rejected_not_stored_as_nulls():
    """``\\d`` matches every script's digits; polars' casts read only ASCII ones."""
    good = "[2025-03-01 00:00:01] INFO - TextLen=75, Emotion=sad, Duration=7.9s, Success=True\n"
    lines = [good.replace("TextLen=75", "TextLen=٧٥"), good.replace("Duration=7.9s", "Duration=７.9s"),
             "  " + good.replace("TextLen=75", "TextLen = ٧٥"), good]
    r = TEXT.parse(Chunk(0, "".join(lines).encode()), ctx())
    assert r.batch.frame["text_length"].to_list() == [75]
    assert len(r.batch.rejects) == 3 and all("no match" in x.reason for x in r.batch.rejects)

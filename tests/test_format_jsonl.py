import random
from datetime import datetime

import orjson

from voxtrail.sources.formats import Chunk, ParseContext
from voxtrail.sources.formats.detect import FORMATS

JSONL, AUDIT = FORMATS["jsonl"], FORMATS["audit"]
SAMPLES = "/work/shared/samples/"


def ctx(tz="UTC", stream="s1"):
    return ParseContext(stream, "x.jsonl", tz)


def test_jsonl_counts_and_sums():
    rnd = random.Random(1)
    lines, lat, failed, tl = [], 0, 0, 0
    for i in range(2000):
        ok, d, t = rnd.random() < 0.9, rnd.randint(1, 150), rnd.randint(1, 600)
        lines.append(orjson.dumps({"time": f"2025-03-01T00:00:{i % 60:02d}", "text_len": t,
                                   "emotion": "开心", "duration": d / 10, "success": ok}))
        lat, failed, tl = lat + d * 100, failed + (not ok), tl + t
    data = b"\r\n".join(lines) + b"\r\n"
    r = JSONL.parse(Chunk(0, data), ctx())
    f = r.batch.frame
    assert f.height == 2000 and not r.batch.rejects and r.consumed == len(data)
    assert round(f["latency_ms"].sum()) == lat and f["text_length"].sum() == tl
    assert (f["status"] == "failed").sum() == failed
    assert r.batch.constants["source_format"] == "jsonl"


def test_jsonl_fields_attributes_tz():
    line = {"ts": "2025-03-01T08:00:00+08:00", "status": "failed", "latency_ms": 5, "node": "gpu1",
            "emotion_vector": [0, 1, 0, 0, 0, 0, 0, 0], "request_id": "abc", "user_id": 7, "foo": {"x": 1}}
    data = orjson.dumps(line) + b"\n" + b'{"time": "2025-03-01 08:00:00.5", "success": true}\n'
    f = JSONL.parse(Chunk(0, data), ctx("Asia/Shanghai")).batch.frame
    assert f["ts"].to_list() == [datetime(2025, 3, 1), datetime(2025, 3, 1, 0, 0, 0, 500000)]
    row = f.row(0, named=True)
    assert row["request_id"] == "abc" and row["user_id"] == "7" and row["node"] == "gpu1"
    assert orjson.loads(row["attributes"]) == {"foo": {"x": 1}}
    assert orjson.loads(row["emotion_vector"]) == [0, 1, 0, 0, 0, 0, 0, 0]
    assert f["request_id"][1] == f"s1-{len(orjson.dumps(line)) + 1:012d}"


def test_jsonl_rejects():
    good = b'{"time": "2025-03-01T00:00:00", "success": true, "duration": 1}\n'
    bad = [b"[1, 2]", b'{"time": "2025-03-01T00:00:00"', b'{"success": true}', b'{"time": "2025-03-01T00:00:00"}',
           b'{"time": "yesterday", "success": true}', b'{"time": "2025-03-01T00:00:00", "success": "maybe"}',
           b'{"time": "2025-03-01T00:00:00", "success": true, "duration": "1s"}', b'{"a": "\xff"}',
           b'{"x": "' + b"y" * (1 << 20) + b'"']
    data, offsets = b"", []
    for b in bad:
        data += good + b"\n"
        offsets.append(len(data))
        data += b + b"\n"
    r = JSONL.parse(Chunk(5, data + good), ctx())
    assert r.batch.frame.height == len(bad) + 1 and r.skipped == len(bad)
    rej = r.batch.rejects
    assert [x.offset for x in rej] == [o + 5 for o in offsets]
    reasons = [x.reason for x in rej]
    assert reasons[0] == "jsonl: expected a JSON object, got list"
    assert reasons[1].startswith("jsonl: invalid JSON: ")
    assert reasons[2] == "jsonl: missing field 'time'" and reasons[3] == "jsonl: missing field 'success'"
    assert reasons[4] == "jsonl: time: invalid datetime 'yesterday'"
    assert reasons[5].startswith("jsonl: success: expected true or false")
    assert reasons[6].startswith("jsonl: duration: expected a number")
    assert reasons[7].startswith("jsonl: invalid JSON") and len(rej[8].excerpt) == 200


def test_audit_records():
    rec = {"request_id": "r1", "user_id": 31, "text_input": "你好世界", "emotion_vector": [0.1] * 8,
           "status": "success", "created_at": "2025-03-01 08:00:00.984000", "latency_ms": 4600, "extra": 1}
    bad = [{**rec, "status": None}, {**rec, "created_at": "3 pm"}, {**rec, "emotion_vector": [1, 2]},
           {k: v for k, v in rec.items() if k != "request_id"}]
    data = b"\n".join(orjson.dumps(x) for x in [rec, *bad]) + b"\n"
    r = AUDIT.parse(Chunk(0, data), ctx("Asia/Shanghai"))
    row = r.batch.frame.row(0, named=True)
    assert row["request_id"] == "r1" and row["user_id"] == "31" and row["text_length"] == 4
    assert row["ts"] == datetime(2025, 3, 1, 0, 0, 0, 984000) and row["latency_ms"] == 4600.0
    assert orjson.loads(row["attributes"]) == {"extra": 1}
    assert [x.reason for x in r.batch.rejects] == [
        "audit: missing field 'status'", "audit: created_at: invalid datetime '3 pm'",
        "audit: emotion_vector: expected a list of 8 numbers, got [1,2]", "audit: missing field 'request_id'"]


def test_samples():
    for fmt, name in ((JSONL, "tts.jsonl"), (AUDIT, "audit.jsonl")):
        data = open(SAMPLES + name, "rb").read()
        r = fmt.parse(Chunk(0, data, final=True), ctx())
        assert r.batch.frame.height == 300 and not r.batch.rejects
    ids = AUDIT.parse(Chunk(0, data), ctx()).batch.frame["request_id"]
    assert ids[0] == "d6645fa9-e8a8-529f-035e-fa259b08923d"


def test_a_chunk_of_only_blank_or_garbage_lines_is_rejects_not_a_crash():
    """#6: polars found no 'status' column in a chunk without one good line."""
    for fmt in (JSONL, AUDIT):
        data = b"\n   \nnot json\n[1]\n\xff\xfe\n"
        r = fmt.parse(Chunk(0, data), ctx())
        assert r.batch.frame.height == 0 and r.skipped == 2 and len(r.batch.rejects) == 3
        assert {"request_id", "ts", "status"} <= set(r.batch.frame.columns)


def test_values_no_database_stores_reject_their_line_only():
    """#6: a text_length of 2**63 or a created_at that overflows failed the whole file, on every run."""
    good = {"request_id": "ok", "status": "success", "created_at": "2025-03-01 08:00:00"}
    bad = [{**good, "request_id": "big", "text_length": 2**63},
           {**good, "request_id": "y0", "created_at": "0001-01-01T00:00:00+01:00"},
           {**good, "request_id": "y10k", "created_at": "9999-12-31T23:59:59-12:00"},
           {**good, "request_id": "naive", "created_at": "0999-12-31 23:00:00"},
           {**good, "request_id": "attrs", "attributes": "just a string"}]
    data = b"\n".join(orjson.dumps(x) for x in [*bad, good]) + b"\n"
    r = AUDIT.parse(Chunk(0, data), ctx())
    assert r.batch.frame["request_id"].to_list() == ["ok"]
    reasons = [x.reason for x in r.batch.rejects]
    assert len(reasons) == len(bad)
    assert "text_length" in reasons[0] and "out of range" in reasons[0]
    assert all("outside the years 1000 to 9999" in x for x in reasons[1:4])
    assert reasons[4] == 'audit: attributes: expected a JSON object, got "just a string"'
    # jsonl's aliases are checked like the fields they stand for.
    seed = {"time": "2025-03-01T00:00:00", "success": True}
    lines = [{**seed, "duration": 1e306}, {**seed, "text_len": "long"}, {**seed, "text_len": 2**63}, seed]
    r = JSONL.parse(Chunk(0, b"\n".join(orjson.dumps(x) for x in lines) + b"\n"), ctx())
    assert r.batch.frame.height == 1
    assert [x.reason.split(":")[1].strip() for x in r.batch.rejects] == ["duration", "text_len", "text_len"]

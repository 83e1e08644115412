"""Objects -> events (contract A): the mapping HTTP ingest, the recorder and Redis share."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from voxtrail.sources.records import InvalidEvent, batch_from_objects, event_fields
from voxtrail.store import Store

GOOD = {"request_id": "r-1", "ts": "2025-03-01T10:00:00.250+08:00", "status": "success", "latency_ms": 812.5,
        "text_input": "你好，世界", "emotion_vector": [0, 0.5, 0, 0, 0, 0, 0, 0], "node": "gpu-1"}


def test_event_fields_maps_values_and_converts_ts_to_utc():
    row = event_fields(GOOD)
    assert row["ts"] == datetime(2025, 3, 1, 2, 0, 0, 250000)
    assert row["status"] == "success" and row["latency_ms"] == 812.5 and row["node"] == "gpu-1"
    assert row["text_length"] == 5  # derived from the text when absent
    assert orjson.loads(row["emotion_vector"]) == [0, 0.5, 0, 0, 0, 0, 0, 0]
    assert "attributes" not in row


def test_z_suffix_and_aware_datetime_are_accepted():
    assert event_fields({**GOOD, "ts": "2025-03-01T02:00:00Z"})["ts"] == datetime(2025, 3, 1, 2)
    aware = datetime(2025, 3, 1, 10, tzinfo=timezone(timedelta(hours=8)))
    assert event_fields({**GOOD, "ts": aware})["ts"] == datetime(2025, 3, 1, 2)


def test_naive_ts_is_refused_unless_a_zone_is_given():
    with pytest.raises(InvalidEvent) as info:
        event_fields({**GOOD, "ts": "2025-03-01T10:00:00"})
    assert info.value.field == "ts" and "offset" in info.value.reason
    row = event_fields({**GOOD, "ts": "2025-03-01T10:00:00"}, naive_tz="Asia/Shanghai")
    assert row["ts"] == datetime(2025, 3, 1, 2)


def test_unknown_keys_and_source_fields_go_to_attributes():
    row = event_fields({**GOOD, "voice": "alice", "source": "spoofed", "attributes": {"a": 1}})
    assert orjson.loads(row["attributes"]) == {"a": 1, "voice": "alice", "source": "spoofed"}
    assert "source" not in row


@pytest.mark.parametrize("change, field, reason", [
    ({"latency_ms": "fast"}, "latency_ms", "expected a number"),
    ({"status": "ok"}, "status", "expected 'success' or 'failed'"),
    ({"text_length": 1.5}, "text_length", "expected an integer"),
    ({"emotion_vector": [1, 2]}, "emotion_vector", "expected a list of 8 numbers"),
    ({"ts": "yesterday"}, "ts", "invalid datetime"),
    ({"node": "n" * 129}, "node", "longer than 128 characters"),
    ({"request_id": ""}, "request_id", "must not be empty"),
    ({"status": None}, "status", "missing field 'status'"),
])
def test_invalid_values_name_the_field(change, field, reason):
    with pytest.raises(InvalidEvent) as info:
        event_fields({**GOOD, **change})
    assert info.value.field == field
    assert reason in info.value.reason


def test_not_an_object():
    with pytest.raises(InvalidEvent) as info:
        event_fields([1, 2])
    assert info.value.field is None and "expected a JSON object" in str(info.value)


def test_batch_raise_sets_the_index_and_requires_request_id():
    objs = [GOOD, {**GOOD, "request_id": "r-2"}, {k: v for k, v in GOOD.items() if k != "request_id"}]
    with pytest.raises(InvalidEvent) as info:
        batch_from_objects(objs, source="http")
    assert info.value.index == 2 and info.value.field == "request_id"
    batch = batch_from_objects(objs, source="recorder", require_request_id=False, on_invalid="raise")
    assert batch.size == 3


def test_batch_reject_keeps_invalid_objects_as_rejects(sqlite_url):
    objs = [GOOD, {**GOOD, "request_id": "r-2", "latency_ms": "slow"}, {**GOOD, "request_id": "r-3"}]
    batch = batch_from_objects(objs, source="recorder", source_format="spool", on_invalid="reject",
                               offsets=[0, 100, 200])
    assert batch.size == 2 and batch.constants == {"source": "recorder", "source_format": "spool"}
    (reject,) = batch.rejects
    assert reject.offset == 100 and reject.reason == "recorder: latency_ms: expected a number, got \"slow\""
    assert b'"r-2"' in reject.excerpt
    with Store.open(sqlite_url) as store:
        first = store.write(batch, stream_id="spool-1")
        again = store.write(batch, stream_id="spool-1")
        assert (first.inserted, again.inserted, again.duplicates) == (2, 0, 2)
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM tts_rejects").scalar() == 1
            assert conn.exec_driver_sql("SELECT source FROM tts_events").scalars().all() == ["recorder"] * 2


def test_empty_batch_and_bad_arguments():
    empty = batch_from_objects([], source="http")
    assert empty.size == 0 and empty.constants == {"source": "http"}
    with pytest.raises(ValueError):
        batch_from_objects([GOOD], source="carrier-pigeon")

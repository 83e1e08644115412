"""A data error is never an outage (issue 10, #1 #2 #12): one bad event is quarantined with its
reason and the events after it arrive within seconds, on every delivery path (the Recorder to a
database, over HTTP and through Redis; file import) and on SQLite, PostgreSQL and MariaDB.

The poison events are the ones the review found: a NUL in text and JSON fields (PostgreSQL cannot
store it), a lone surrogate (text from ``json.loads('"\\ud800"')``), a ``ts`` in the year 0 once in
UTC, ``attributes`` that are not an object, an integer no database stores, and one the database
itself refuses (a trigger stands for any constraint voxtrail's checks do not know of).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
import sqlalchemy as sa

from helpers_recorder import refuse_in_database, rows, wait_until
from voxtrail import Recorder
from voxtrail.event import Reject
from voxtrail.sources.files.importer import Importer
from voxtrail.store import Store, StoreError, accounts
from voxtrail.store.schema import tts_events, tts_rejects
from voxtrail.store.verify import verify

SURROGATE = json.loads('"\\ud800"')
GOOD = 5
#: Refused by the database itself (see refuse_in_database): voxtrail's checks find nothing wrong.
DB_REFUSED = "p-refused-by-db"


def recent(minutes: int = 0) -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=1, minutes=minutes)


def poison_fields() -> dict[str, dict]:
    """request_id -> Recorder fields; the NUL and surrogate ones are stored (replaced), the others refused."""
    return {
        "p-nul": dict(status="failed", error_message="CUDA\x00 error", node="gpu\x001", model="m\x00",
                      emotion="开心\x00", attributes={"k\x00": "v\x00", "nested": ["\x00"]}),
        "p-surrogate": dict(text_input=f"hi {SURROGATE}", error_message=SURROGATE, emotion=SURROGATE,
                            attributes={SURROGATE: [SURROGATE]}),
        "p-year-0": dict(ts="0001-01-01T00:00:00+01:00"),
        "p-attributes-string": dict(attributes="just a string"),
        "p-attributes-json-text": dict(attributes='{"a": 1}'),
        "p-huge-int": dict(text_length=2**63),
        DB_REFUSED: dict(text_input="the database refuses this row"),
    }


STORED_POISON = {"p-nul", "p-surrogate"}


def stored(url: str) -> dict[str, dict]:
    """Events by request_id, encrypted fields decrypted."""
    from voxtrail.transforms.encrypt import decrypt_value, is_encrypted

    with Store.open(url) as store, store.engine.connect() as conn:
        events = {r["request_id"]: dict(r) for r in conn.execute(sa.select(tts_events)).mappings()}
        for rid, event in events.items():
            for name, value in event.items():
                if is_encrypted(value):
                    event[name] = decrypt_value(value, store.keyring, name, rid)
    return events


def reject_reasons(url: str) -> list[str]:
    return [r[0] for r in rows(url, "SELECT reason FROM tts_rejects")]


def assert_chain_verifies(url: str) -> None:
    with Store.open(url) as store:
        report = verify(store.engine, store.keyring)
    assert report.ok, report.problem


def assert_nul_and_surrogate_replaced(events: dict[str, dict]) -> None:
    nul, sur = events["p-nul"], events["p-surrogate"]
    assert nul["error_message"] == "CUDA\ufffd error" and nul["node"] == "gpu\ufffd1" and nul["emotion"] == "开心\ufffd"
    attributes = nul["attributes"] if isinstance(nul["attributes"], dict) else json.loads(nul["attributes"])
    assert attributes["k\ufffd"] == "v\ufffd" and attributes["nested"] == ["\ufffd"]
    assert sur["error_message"] == sur["emotion"] == "\ufffd" and sur["text_input"] == "hi \ufffd"


def record_poison_then_good(rec: Recorder) -> list[str]:
    """Every poison event first, then GOOD events; returns the good ones' request_ids."""
    for rid, fields in poison_fields().items():
        assert rec.record(request_id=rid, **fields) == rid  # never raises into the service
    return [rec.record(text_input=f"good {i}", latency_ms=10.0 + i, ts=recent(i)) for i in range(GOOD)]


def test_recorder_to_the_database(db_url, tmp_path):
    refuse_in_database(db_url, [DB_REFUSED])
    rec = Recorder(db=db_url, spool_dir=tmp_path / "spool", max_backoff=0.5)
    started = time.monotonic()
    good = record_poison_then_good(rec)
    assert wait_until(lambda: set(good) <= set(stored(db_url)), timeout=20), rec.stats()
    assert time.monotonic() - started < 20
    assert rec.close()
    events = stored(db_url)
    assert set(events) == set(good) | STORED_POISON
    assert_nul_and_surrogate_replaced(events)
    reasons = reject_reasons(db_url)
    assert len(reasons) == 5 and rec.stats()["rejected"] == 5
    assert any("ts" in r and "years 1000 to 9999" in r for r in reasons)
    assert sum("attributes: expected a JSON object" in r for r in reasons) == 2
    assert any("text_length" in r and "out of range" in r for r in reasons)
    assert any("the database refused it" in r and "poison row refused" in r for r in reasons)
    assert_chain_verifies(db_url)


def test_recorder_over_http(db_url, tmp_path):
    from test_recorder_http import Collector

    refuse_in_database(db_url, [DB_REFUSED])
    with Store.open(db_url) as store:
        _, token = accounts.create_token(store.engine, "node-1", "ingest")
    collector = Collector(db_url)
    try:
        rec = Recorder(url=collector.url, token=token, spool_dir=tmp_path / "spool", max_backoff=0.5)
        good = record_poison_then_good(rec)
        assert wait_until(lambda: set(good) <= set(stored(db_url)), timeout=20), rec.stats()
        assert rec.close()
    finally:
        collector.stop()
    events = stored(db_url)
    assert set(events) == set(good) | STORED_POISON
    assert_nul_and_surrogate_replaced(events)
    # The collector answered 400 naming each invalid event: set aside in the spool, with the reason.
    (kept,) = (tmp_path / "spool" / "rejected").iterdir()
    entries = [json.loads(line) for line in kept.read_text().splitlines()]
    aside = {entry["event"]["request_id"]: entry["reason"] for entry in entries}
    assert set(aside) == {"p-year-0", "p-attributes-string", "p-attributes-json-text", "p-huge-int"}
    assert all(reason.startswith("HTTP 400") for reason in aside.values())
    # The one the database refused is quarantined by the collector's store, and counted.
    (reason,) = reject_reasons(db_url)
    assert "poison row refused" in reason and rec.stats()["rejected"] == 5
    assert_chain_verifies(db_url)


def test_recorder_through_redis_and_collect(db_url, tmp_path):
    import redis

    from test_redis import REDIS_URL
    from voxtrail.sources.redis_stream import StreamCollector

    client = redis.Redis.from_url(REDIS_URL)
    stream = f"voxtrail-test:{uuid.uuid4().hex[:10]}"
    refuse_in_database(db_url, [DB_REFUSED])
    try:
        rec = Recorder(redis=REDIS_URL, stream=stream, spool_dir=tmp_path / "spool")
        good = record_poison_then_good(rec)
        assert rec.close()
        with Store.open(db_url) as store:
            collector = StreamCollector(client, store, stream=stream, group="g", consumer="c1", block_ms=100)
            collector.prepare()
            import threading

            started = time.monotonic()
            stats = collector.run(threading.Event(), until_empty=True)
            assert time.monotonic() - started < 20
        assert client.xlen(stream) == 0  # every entry acknowledged and deleted: nothing left to retry
    finally:
        client.delete(stream)
        client.close()
    events = stored(db_url)
    assert set(events) == set(good) | STORED_POISON
    assert_nul_and_surrogate_replaced(events)
    assert stats.rejected == 5 and len(reject_reasons(db_url)) == 5
    assert_chain_verifies(db_url)


def audit_line(rid: str, **fields) -> bytes:
    record = {"request_id": rid, "user_id": 31, "status": "success", "created_at": f"{recent():%Y-%m-%d %H:%M:%S}",
              "text_input": "你好", **fields}
    return orjson.dumps(record) + b"\n"


def test_import_of_an_audit_file_with_poison_lines(db_url, tmp_path):
    refuse_in_database(db_url, [DB_REFUSED])
    log = tmp_path / "audit.log"
    lines = [
        audit_line("p-nul", error_message="CUDA\x00 error", node="gpu\x001", emotion="开心\x00",
                   attributes={"k\x00": "v\x00", "nested": ["\x00"]}),
        audit_line("p-year-0", created_at="0001-01-01T00:00:00+01:00"),
        audit_line("p-overflow", created_at="9999-12-31T23:59:59-12:00"),
        audit_line("p-huge-int", text_length=2**63),
        audit_line("p-attributes-string", attributes="just a string"),
        b"not json at all\n", b"\n", b"   \n",
        audit_line(DB_REFUSED),
        *(audit_line(f"good-{i}", latency_ms=10.0 + i) for i in range(GOOD)),
    ]
    log.write_bytes(b"".join(lines))
    with Store.open(db_url) as store:
        summary = Importer(store, fmt="audit", tz="UTC").run([str(log)])
        again = Importer(store, fmt="audit", tz="UTC").run([str(log)])
    (result,) = summary.files
    assert result.status == "ok" and (result.imported, result.rejected, result.skipped) == (GOOD + 1, 6, 2)
    assert (again.total("imported"), again.total("rejected")) == (0, 0)  # the checkpoint is past every line
    events = stored(db_url)
    assert set(events) == {f"good-{i}" for i in range(GOOD)} | {"p-nul"}
    assert events["p-nul"]["error_message"] == "CUDA\ufffd error"
    reasons = reject_reasons(db_url)
    assert len(reasons) == 6 and any("poison row refused" in r for r in reasons)
    assert sum("outside the years 1000 to 9999" in r for r in reasons) == 2
    assert_chain_verifies(db_url)


def test_store_isolates_what_the_database_refuses(db_url):
    """Defence in depth: a batch the database refuses for some rows' values is split until those
    rows are alone; they become rejects with the database's reason, the rest is stored with its
    rollups and chain, and the checkpoint is saved."""
    from test_store import checkpoint, make_batch
    from test_rollups import raw_hour_counts, rollup_hour_counts

    refused = ["r000007", "r000030", "r000031", "r000063"]
    refuse_in_database(db_url, refused)
    with Store.open(db_url) as store:
        result = store.write(make_batch(64), checkpoint(4096))
        assert (result.inserted, result.duplicates, result.rejected) == (60, 0, 4)
        assert sorted(rid for rid, _ in result.refused) == refused
        assert all("the database refused it" in reason and "poison row refused" in reason
                   for _, reason in result.refused)
        assert store.count() == 60 and store.checkpoints()[0].offset == 4096
        assert raw_hour_counts(store) == rollup_hour_counts(store)
        again = store.write(make_batch(64), checkpoint(4096))  # a re-delivery: no new rows, rejects once
        assert (again.inserted, again.duplicates, again.rejected) == (0, 60, 4)
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(tts_rejects)).scalar() == 4
    assert_chain_verifies(db_url)


def test_an_outage_mid_write_leaves_nothing(db_url):
    """Only what is not about the values is an outage: StoreError, and nothing of the write."""
    from test_store import checkpoint, make_batch

    refuse_in_database(db_url, ["r000700"], outage=True)
    batch = make_batch(1000)
    batch.rejects = [Reject(1, "bad", b"x")]
    with Store.open(db_url) as store:
        with pytest.raises(StoreError) as err:
            store.write(batch, checkpoint(999), stream_id="s1")
        assert "\n" not in str(err.value)
        assert store.count() == 0 and store.checkpoints() == []
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(tts_rejects)).scalar() == 0


TEXT_FIELDS = ("request_id", "status", "level", "emotion", "user_id", "text_input", "pinyin_input", "ref_audio_url",
               "ref_audio_sha256", "emotion_desc", "emotion_control", "mode", "error_type", "error_message",
               "output_audio_url", "output_audio_sha256", "node", "model", "model_version")


def test_a_lone_surrogate_never_raises_into_the_service(db_url, tmp_path):
    """#2: in every text-bearing field and in attributes, through record() and generation()
    (success and failure): stored with U+FFFD, or a reject where the field refuses the value."""
    rec = Recorder(db=db_url, spool_dir=tmp_path / "spool", defaults={"node": f"gpu{SURROGATE}"})
    ids = {name: rec.record(**{name: f"x{SURROGATE}"}, attributes={f"k{SURROGATE}": SURROGATE})
           for name in TEXT_FIELDS if name not in ("request_id", "node")}
    rec.record(request_id=f"rid{SURROGATE}")
    with rec.generation(request_id="gen-ok", text_input=SURROGATE, attributes={"a": SURROGATE}) as gen:
        gen.set(output_audio_url=f"/out/{SURROGATE}.wav")
    with pytest.raises(RuntimeError, match="boom"):
        with rec.generation(request_id="gen-failed", text_input="t"):
            raise RuntimeError(f"boom {SURROGATE}\x00")
    assert rec.close()
    events = stored(db_url)
    (reason,) = reject_reasons(db_url)  # status 'x\ufffd' is neither success nor failed
    assert "status" in reason and ids.pop("status") not in events
    for name, rid in ids.items():
        assert events[rid][name] == "x\ufffd", name
        assert events[rid]["node"] == "gpu\ufffd"
        attributes = events[rid]["attributes"]
        assert (attributes if isinstance(attributes, dict) else json.loads(attributes)) == {"k\ufffd": "\ufffd"}
    assert "rid\ufffd" in events
    assert events["gen-ok"]["text_input"] == "\ufffd" and events["gen-ok"]["output_audio_url"] == "/out/\ufffd.wav"
    assert events["gen-failed"]["error_message"] == "boom \ufffd\ufffd" and events["gen-failed"]["status"] == "failed"
    assert_chain_verifies(db_url)


def crash_on(text: str):
    """A transform that fails unexpectedly (not an outage) on batches holding ``text``: a stand-in
    for a bug or a value nothing foresaw, so that the class-level rule is what is tested."""
    import polars as pl

    def transform(batch):
        if "text_input" in batch.frame.columns and batch.frame.select((pl.col("text_input") == text).any()).item():
            raise RuntimeError(f"cannot handle {text!r}")
        return batch
    return transform


def test_the_shipper_sets_aside_an_event_a_transport_keeps_failing_on(sqlite_url, tmp_path):
    from voxtrail.transforms.normalize import normalize

    rec = Recorder(db=sqlite_url, spool_dir=tmp_path / "spool", batch_size=64)
    rec._shipper.transport.chain = [normalize, crash_on("crash")]
    good = [rec.record(text_input=f"before {i}") for i in range(40)]
    rec.record(request_id="the-crash", text_input="crash")
    good += [rec.record(text_input=f"after {i}") for i in range(GOOD)]
    assert wait_until(lambda: set(good) <= set(stored(sqlite_url)), timeout=20), rec.stats()
    assert rec.close()
    assert set(stored(sqlite_url)) == set(good)
    (kept,) = (tmp_path / "spool" / "rejected").iterdir()
    (line,) = kept.read_text().splitlines()
    entry = json.loads(line)
    assert entry["event"]["request_id"] == "the-crash" and "RuntimeError: cannot handle 'crash'" in entry["reason"]
    assert rec.stats()["rejected"] == 1


def test_collect_keeps_an_entry_it_cannot_store_as_a_reject(sqlite_url, tmp_path):
    import threading

    import redis

    from test_redis import REDIS_URL
    from voxtrail.sources.redis_stream import StreamCollector
    from voxtrail.transforms.normalize import normalize

    client = redis.Redis.from_url(REDIS_URL)
    stream = f"voxtrail-test:{uuid.uuid4().hex[:10]}"
    try:
        rec = Recorder(redis=REDIS_URL, stream=stream, spool_dir=tmp_path / "spool")
        good = [rec.record(text_input=f"good {i}") for i in range(3)]
        assert rec.close()
        client.xadd(stream, {b"events": orjson.dumps({"request_id": "x", "ts": "2025-03-01T00:00:00Z",
                                                      "status": "success", "text_input": "crash"})})
        rec = Recorder(redis=REDIS_URL, stream=stream, spool_dir=tmp_path / "spool")
        good += [rec.record(text_input=f"after {i}") for i in range(GOOD)]
        assert rec.close()
        with Store.open(sqlite_url) as store:
            collector = StreamCollector(client, store, stream=stream, group="g", consumer="c1", block_ms=100)
            collector.chain = [normalize, crash_on("crash")]
            collector.prepare()
            collector.run(threading.Event(), until_empty=True)
        assert client.xlen(stream) == 0
    finally:
        client.delete(stream)
        client.close()
    assert set(stored(sqlite_url)) == set(good)
    (reason,) = reject_reasons(sqlite_url)
    assert "could not be stored: RuntimeError: cannot handle 'crash'" in reason

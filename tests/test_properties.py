"""Property-based tests of the data path (issue 10, beyond the list): hostile values through the
object mapping shared by HTTP ingest, the Recorder and the Redis collector, and through the
JSON-lines file formats, on SQLite, PostgreSQL and MariaDB at once.

Invariants, whatever the input: a good event is stored once; a bad one is quarantined with a
reason; every database gives an event the same fate and the same stored value; nothing raises
(no traceback, no path stops); HTTP answers 200 or 400, never 5xx, for what a client sends; the
hash chain verifies afterwards. Hypothesis' budget is the bounded profile of tests/conftest.py;
the stores are module-scoped (one per dialect) and each example uses request ids of its own.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxtrail.event import FIELDS
from voxtrail.recorder.core import RECORDABLE
from voxtrail.sources.formats import Chunk, ParseContext
from voxtrail.sources.formats.detect import FORMATS
from voxtrail.sources.records import batch_from_objects
from voxtrail.sources.redis_stream import entries_to_batch
from voxtrail.store import Store, chain
from voxtrail.store.schema import tts_events, tts_rejects
from voxtrail.store.verify import verify
from voxtrail.transforms import apply, default_chain

NOW = datetime.now(timezone.utc)

# --- Hostile values --------------------------------------------------------------------------------

#: Characters that broke something once: NUL (PostgreSQL), lone surrogates (UTF-8), the chain's
#: field separator, a BOM, a line break inside a value, a 4-byte character.
NASTY_CHARS = ["\x00", "\ud800", "\udfff", "\x1f", "\ufeff", "\n", "\r", "😀", "'", '"', "\\", "\u2028"]
nasty_text = st.lists(st.one_of(st.sampled_from(NASTY_CHARS), st.text(max_size=3)), max_size=6).map("".join)
#: Longer than a column, and (rarely: it is slow to move around) more text than one row takes.
huge_text = st.sampled_from(["x" * 129, "长" * 65, "e" * 17, "x" * 300, "长" * 65, "x" * 129, "y" * (4 << 20 | 1)])
integers = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1,
                                                                     2**64 - 1, 2**64, 10**400]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e16, 1e300, 1.7976931348623157e308]))
offsets = st.sampled_from(["Z", "+00:00", "+08:00", "-12:00", "+14:00", ""])
#: The edges of what every database stores, on either side once in UTC.
edge_timestamps = st.sampled_from(["0001-01-01T00:00:00+01:00", "1000-01-01T00:00:00Z", "0999-12-31T23:59:59-01:00",
                                   "9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59-12:00",
                                   "2025-03-01T10:00:00+14:00"])
timestamps = st.one_of(
    st.builds(lambda dt, off: dt.isoformat() + off,
              st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)), offsets),
    edge_timestamps)
scalars = st.one_of(st.none(), st.booleans(), integers, floats, nasty_text, timestamps)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(nasty_text, inner, max_size=3)),
                           max_leaves=12)


def nested(depth: int):
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


hostile = st.one_of(scalars, json_values, huge_text, st.integers(15, 40).map(nested))
#: A plausible value for each field, so that many examples are good events.
PLAUSIBLE = {
    "string": st.text(max_size=20), "text": st.text(max_size=50), "int": st.integers(0, 10_000),
    "float": st.floats(0, 1e6, allow_nan=False), "timestamp": st.just("2025-03-01T00:00:00Z"),
    "json": st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
}
#: A hostile value of the field's own type: it passes the type check and meets the storage rules.
NASTY = {
    "string": st.one_of(nasty_text, huge_text), "text": st.one_of(nasty_text, huge_text), "int": integers,
    "float": floats, "timestamp": timestamps, "json": st.dictionaries(nasty_text, json_values, max_size=3),
}
CHOSEN = [f for f in FIELDS if f.name in RECORDABLE and f.name not in ("request_id", "ts", "status")]


def mostly(draw, good, bad, good_in_ten: int):
    return draw(good if draw(st.integers(0, 9)) < good_in_ten else bad)


@st.composite
def events(draw) -> dict:
    """An event object: mostly valid, with values of each field's type that test the storage rules
    (NUL, surrogates, extremes), and now and then any hostile value in any field or key."""
    recent = st.just((NOW - timedelta(hours=1)).isoformat())
    ts = mostly(draw, recent, st.one_of(edge_timestamps, timestamps, hostile), 8)
    obj = {"request_id": str(uuid.uuid4()), "ts": ts,
           "status": mostly(draw, st.sampled_from(["success", "failed"]), hostile, 9)}
    for field in draw(st.lists(st.sampled_from(CHOSEN), max_size=5, unique=True)):
        plausible = PLAUSIBLE[field.kind]
        if field.name == "emotion_vector":
            plausible = st.lists(st.floats(0, 1), min_size=8, max_size=8)
        obj[field.name] = draw(st.one_of(plausible, NASTY[field.kind]) if draw(st.integers(0, 9)) < 8 else hostile)
    for _ in range(draw(st.integers(0, 2))):
        obj[draw(nasty_text)] = draw(hostile)
    return obj


# --- Stores, one per dialect for the module --------------------------------------------------------

@pytest.fixture(scope="module")
def module_keys(tmp_path_factory):
    """One key file for the module: its stores (and the Recorder's) encrypt and verify with the same
    keys across tests (conftest's isolated_keys gives each test its own)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
        for name in ("VOXTRAIL_KEYS", "VOXTRAIL_KEY_FILE", "VOXTRAIL_ENCRYPT_FIELDS", "VOXTRAIL_MASK",
                     "VOXTRAIL_RETENTION_AUDIT", "VOXTRAIL_RETENTION_OPERATIONS", "VOXTRAIL_CONFIG"):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(autouse=True)
def isolated_keys(module_keys):
    """Overrides conftest's: the module's key file, for every test of the module."""


@pytest.fixture(scope="module")
def stores(module_db_url, module_keys):
    """A store per dialect for the whole module (examples use request ids of their own); the chain
    of each must verify once all examples have written to it."""
    made = {dialect: Store.open(module_db_url(dialect)) for dialect in ("sqlite", "postgresql", "mysql")}
    yield made
    for store in made.values():
        report = verify(store.engine, store.keyring)
        store.close()
        assert report.ok, (store.dialect, report.problem)


def stored_rows(store: Store, request_ids: list[str]) -> dict[str, dict]:
    """Stored events by request_id, JSON as the row hash reads it (chain.canonical_value: a number
    beyond 64 bits is a double, however the database gives it back), floats as text (exact)."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(tts_events).where(tts_events.c.request_id.in_(request_ids))).mappings().all()
    out = {}
    for row in rows:
        event = {}
        for field in FIELDS:
            value = row[field.name]
            if field.kind == "json" and value is not None:
                value = chain.canonical_value(json.loads(value) if isinstance(value, str) else value)
            if isinstance(value, float):
                value = repr(value)
            if field.name not in ("row_hash", "ref_audio_url", "text_input", "output_audio_url"):
                event[field.name] = value  # encrypted fields differ by their nonce
        out[row["request_id"]] = event
    return out


def reject_count(store: Store, stream_id: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(tts_rejects)
                            .where(tts_rejects.c.stream_id == stream_id)).scalar_one()


def assert_same_fate_everywhere(stores, objs, write):
    """``write(store, stream_id)`` on every database: each object stored once or quarantined with a
    reason, and the same outcome and stored values on all of them."""
    ids = [o["request_id"] for o in objs]
    fates = {}
    for dialect, store in stores.items():
        stream_id = f"prop-{uuid.uuid4().hex[:12]}"
        result = write(store, stream_id)
        rows = stored_rows(store, ids)
        assert result.inserted == len(rows) and result.duplicates == 0
        assert result.inserted + result.rejected == len(objs), (dialect, result)
        assert reject_count(store, stream_id) == result.rejected
        for row in rows.values():
            assert not any(isinstance(v, str) and "\x00" in v for v in row.values())
        fates[dialect] = rows
    first, *others = fates.values()
    for dialect, rows in zip(list(fates)[1:], others):
        assert rows == first, dialect


# --- The object mapping: ingest, the Recorder's shipper, the Redis collector -----------------------

@given(st.lists(events(), min_size=1, max_size=4))
def test_the_object_mapping_gives_every_event_the_same_fate_on_every_database(stores, objs):
    def write(store, stream_id):
        batch = batch_from_objects(objs, source="http", on_invalid="reject", offsets=list(range(len(objs))))
        return store.write(apply(default_chain(store.settings), batch), stream_id=stream_id)

    assert_same_fate_everywhere(stores, objs, write)


@settings(max_examples=30)
@given(st.lists(events(), min_size=1, max_size=3))
def test_redis_entries_of_hostile_ndjson_are_stored_or_rejected(stores, objs):
    """The collector's path: NDJSON as any producer may XADD it (Python's json writes surrogates
    as escapes orjson refuses), plus a line that is not JSON."""
    lines = [json.dumps(o, default=str).encode() for o in objs]
    entry = [(b"1700000000000-0", {b"events": b"\n".join([*lines, b"{not json"])})]

    def write(store, stream_id):
        return store.write(entries_to_batch(entry, default_chain(store.settings)), stream_id=stream_id)

    results = {d: write(s, f"redis-{uuid.uuid4().hex[:12]}") for d, s in stores.items()}
    outcomes = {(r.inserted, r.rejected) for r in results.values()}
    assert len(outcomes) == 1 and sum(next(iter(outcomes))) == len(objs) + 1


@settings(max_examples=30)
@given(st.lists(events(), min_size=1, max_size=3))
def test_ingest_answers_200_or_400_never_5xx(ingest_clients, stores, objs):
    ingest_stores = stores
    body = json.dumps(objs, default=str).encode()  # what any client library may send
    answers = {}
    for dialect, (client, token) in ingest_clients.items():
        response = client.post("/api/v1/events", content=body,
                               headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        # 413: a body over --max-body, the client's to split (hostile values include 4 MiB texts).
        assert response.status_code in (200, 400, 413), (dialect, response.status_code, response.text)
        answer = response.json()
        if response.status_code == 200:
            assert answer["inserted"] + answer["duplicates"] + answer["rejected"] == answer["received"] == len(objs)
            assert len(answer.get("rejects", [])) == answer["rejected"]
        else:
            assert answer["error"]  # and nothing of the batch was stored:
            assert not stored_rows(ingest_stores[dialect], [o["request_id"] for o in objs])
        answers[dialect] = (response.status_code, answer.get("inserted"), answer.get("rejected"), answer.get("field"))
    assert len(set(answers.values())) == 1, answers


@pytest.fixture(scope="module")
def ingest_clients(stores):
    from fastapi.testclient import TestClient

    from voxtrail.store import accounts
    from voxtrail.web.app import create_app
    from voxtrail.web.settings import WebSettings

    clients, exits = {}, []
    for dialect, store in stores.items():
        _, token = accounts.create_token(store.engine, f"props-{dialect}", "ingest")
        app = create_app(WebSettings(db=store.display_url, max_body=16 << 20), store,
                         router_modules=("voxtrail.web.auth", "voxtrail.web.ingest"))
        client = TestClient(app)
        client.__enter__()
        exits.append(client)
        clients[dialect] = (client, token)
    yield clients
    for client in exits:
        client.__exit__(None, None, None)


# --- The Recorder: record() never raises for a value -----------------------------------------------

recordable = st.dictionaries(st.sampled_from(sorted(RECORDABLE - {"request_id"})), hostile, max_size=4)


@pytest.fixture(scope="module")
def recorder(stores, tmp_path_factory):
    from voxtrail import Recorder

    rec = Recorder(db=str(stores["sqlite"].engine.url), spool_dir=tmp_path_factory.mktemp("spool"), max_backoff=0.5)
    yield rec
    assert rec.flush(60)
    stats = rec.stats()
    rec.close()
    assert stats["inserted"] + stats["rejected"] == stats["recorded"] and not stats["duplicates"], stats


@given(recordable, st.one_of(st.none(), json_values, nasty_text))
def test_record_never_raises_for_a_value(recorder, fields, attributes):
    if attributes is not None:
        fields["attributes"] = attributes
    assert recorder.record(**fields)
    generation = {k: v for k, v in fields.items() if k != "status"}
    with recorder.generation(**generation) as gen:
        gen.set(error_message=attributes if isinstance(attributes, str) else "fine")


# --- JSON-lines files: jsonl and audit -------------------------------------------------------------

line_values = st.one_of(
    st.builds(lambda o: json.dumps(o, default=str).encode(), events()),
    st.builds(lambda o: json.dumps(o, default=str).encode(),
              st.dictionaries(st.sampled_from(["time", "created_at", "success", "status", "text_len", "duration",
                                               "request_id", "attributes", "latency_ms", "emotion_vector"]),
                              st.one_of(json_values, st.just("2025-03-01 10:00:00"), st.just(True)), max_size=6)),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
    st.sampled_from([b"", b"   ", b"\xef\xbb\xbf{}", b"[1, 2]", b"null", b'"text"', b"{", b"\xff\xfe"]),
)


@given(st.sampled_from(["jsonl", "audit"]), st.lists(line_values, min_size=1, max_size=6))
def test_json_lines_are_each_an_event_a_reject_or_skipped_and_stored_alike(stores, fmt, lines):
    data = b"\n".join(lines) + b"\n"
    stream = uuid.uuid4().hex[:16]
    parsed = FORMATS[fmt].parse(Chunk(0, data), ParseContext(stream, "hostile.log", "Asia/Shanghai"))
    batch = parsed.batch
    assert parsed.consumed == len(data)
    assert batch.size + len(batch.rejects) + parsed.skipped == len(lines)
    assert all(r.reason for r in batch.rejects)
    outcomes = set()
    for store in stores.values():
        result = store.write(apply(default_chain(store.settings), batch), stream_id=f"{stream}-{store.dialect}",
                             source_file="hostile.log")
        assert result.inserted + result.duplicates + result.rejected == batch.size + len(batch.rejects)
        outcomes.add((result.inserted, result.rejected))
    assert len(outcomes) == 1, outcomes


def test_the_strategies_reach_the_hostile_cases():
    """The generators do produce what the properties are about (so that they cannot pass vacuously)."""
    probes = {"nul": "\\u0000", "surrogate": "\\ud800", "nan": "NaN", "infinity": "Infinity", "year 1": '"0001-',
              "huge int": "9223372036854775808", "deep": '[{"k": [{"k": ['}
    found = set()

    @settings(max_examples=150, database=None, derandomize=True)
    @given(events())
    def look(obj):
        text = json.dumps(obj, default=str)
        found.update(name for name, probe in probes.items() if probe in text)

    look()
    assert found == set(probes), set(probes) - found

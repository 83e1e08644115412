"""Recorder(url=..., token=...) against the real collector (voxtrail.web.app, uvicorn on a local port)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from helpers_recorder import dead_port, request_ids, rows, wait_until
from voxtrail import Recorder
from voxtrail.store import Store


class Collector:
    """``voxtrail serve``'s app in a thread, on a given port (0: any free one)."""

    def __init__(self, db_url: str, port: int = 0, max_body: int | None = None):
        import uvicorn

        from voxtrail.web.app import create_app
        from voxtrail.web.settings import WebSettings

        options = {"max_body": max_body} if max_body else {}
        # Only what a recorder talks to: the ingest endpoint and the token check behind it.
        app = create_app(WebSettings(db=db_url, port=port, **options),
                         router_modules=("voxtrail.web.auth", "voxtrail.web.ingest"))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "collector did not start"
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def ingest_token(sqlite_url):
    from voxtrail.store.accounts import create_token

    store = Store.open(sqlite_url)
    try:
        _, secret = create_token(store.engine, "recorder-test", scope="ingest")
    finally:
        store.close()
    return secret


def test_outage_collector_down_then_started(sqlite_url, ingest_token, tmp_path):
    port = dead_port()
    rec = Recorder(url=f"http://127.0.0.1:{port}", token=ingest_token, spool_dir=tmp_path / "spool",
                   max_backoff=0.5)
    ids = [rec.record(text_input=f"t{i}", latency_ms=2.0) for i in range(10_000)]
    assert wait_until(lambda: "cannot reach collector" in (rec.stats()["last_error"] or ""))
    assert rec.stats()["shipped"] == 0
    collector = Collector(sqlite_url, port=port)
    try:
        assert rec.flush(60)
        rec.close()
    finally:
        collector.stop()
    assert rows(sqlite_url) == 10_000
    assert sorted(request_ids(sqlite_url)) == sorted(ids)
    assert rows(sqlite_url, "SELECT COUNT(*) FROM tts_events WHERE source = 'http'") == 10_000


def test_poison_event_is_set_aside_with_the_reason(sqlite_url, ingest_token, tmp_path):
    collector = Collector(sqlite_url)
    try:
        rec = Recorder(url=collector.url, token=ingest_token, spool_dir=tmp_path / "spool")
        good = [rec.record(text_input="a"), rec.record(text_input="b")]
        rec.record(request_id="poison", status="ok")  # the collector answers 400 for this one
        good.append(rec.record(text_input="c"))
        assert rec.flush(30)
        assert rec.stats()["rejected"] == 1
        rec.close()
    finally:
        collector.stop()
    assert sorted(request_ids(sqlite_url)) == sorted(good)
    (rejected,) = (tmp_path / "spool" / "rejected").iterdir()
    (line,) = rejected.read_text().splitlines()
    entry = json.loads(line)
    assert entry["event"]["request_id"] == "poison" and "HTTP 400" in entry["reason"] and "status" in entry["reason"]
    assert rejected.stat().st_mode & 0o777 == 0o600


def test_bad_token_keeps_events_spooled(sqlite_url, ingest_token, tmp_path):
    collector = Collector(sqlite_url)
    spool = tmp_path / "spool"
    try:
        rec = Recorder(url=collector.url, token="vx_wrong", spool_dir=spool, max_backoff=0.2)
        ids = [rec.record(text_input=str(i)) for i in range(50)]
        assert wait_until(lambda: "401" in (rec.stats()["last_error"] or ""))
        assert "token" in rec.stats()["last_error"]
        assert not rec.close(timeout=0.2)
        assert rows(sqlite_url) == 0
        rec = Recorder(url=collector.url, token=ingest_token, spool_dir=spool)  # token fixed: delivered
        assert rec.flush(30)
        rec.close()
    finally:
        collector.stop()
    assert sorted(request_ids(sqlite_url)) == sorted(ids)


def test_body_too_large_is_split(sqlite_url, ingest_token, tmp_path):
    collector = Collector(sqlite_url, max_body=20_000)
    try:
        rec = Recorder(url=collector.url, token=ingest_token, spool_dir=tmp_path / "spool")
        ids = [rec.record(text_input="x" * 200) for _ in range(500)]  # ~130 KB in one batch
        assert rec.flush(30)
        assert rec.stats()["rejected"] == 0
        rec.close()
    finally:
        collector.stop()
    assert sorted(request_ids(sqlite_url)) == sorted(ids)

"""``voxtrail demo``: a filled SQLite file, a demo admin with a printed password, a served dashboard."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import httpx

from voxtrail.store import Store, accounts

DEMO = [sys.executable, "-m", "voxtrail", "demo"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*DEMO, *args], capture_output=True, text=True, timeout=timeout)


def test_fills_the_database_and_creates_the_admin(tmp_path):
    db = tmp_path / "demo.db"
    first = run("--db", str(db), "--no-serve", "--json", "--events", "3000", "--days", "10")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert (out["events"], out["inserted"], out["user"]) == (3000, 3000, "demo")
    with Store.open(out["db"]) as store:
        user = accounts.authenticate(store.engine, "demo", out["password"])
        assert user is not None and user.role == "admin"
        with store.engine.connect() as conn:
            nodes, versions, failed = conn.exec_driver_sql(
                "SELECT COUNT(DISTINCT node), COUNT(DISTINCT model_version), "
                "SUM(status = 'failed') FROM tts_events").one()
    assert nodes >= 3 and versions == 2 and failed > 0

    # Again: nothing stored twice, and a new password replaces the old one.
    second = run("--db", str(db), "--no-serve", "--json", "--events", "3000", "--days", "10")
    again = json.loads(second.stdout)
    assert (again["events"], again["inserted"]) == (3000, 0)
    assert again["password"] != out["password"]
    with Store.open(out["db"]) as store:
        assert accounts.authenticate(store.engine, "demo", out["password"]) is None
        assert accounts.authenticate(store.engine, "demo", again["password"]) is not None


def test_people_get_the_credentials_in_plain_words(tmp_path):
    result = run("--db", str(tmp_path / "d.db"), "--no-serve", "--events", "500")
    assert result.returncode == 0, result.stderr
    assert re.search(r"User: +demo", result.stdout)
    assert re.search(r"Password: +\S{12,}", result.stdout)
    assert "500 events" in result.stdout and "retention" not in result.stdout


def test_a_longer_demo_says_what_retention_will_remove(tmp_path):
    """Issue 10 #18: events generated past the retention ages are said to go at the next purge."""
    result = run("--db", str(tmp_path / "d.db"), "--no-serve", "--events", "1000", "--days", "200")
    assert result.returncode == 0, result.stderr
    (note,) = [line for line in result.stdout.splitlines() if line.startswith("Note:")]
    assert re.search(r"Note: +[\d,]+ events are older than the retention \(audit 180d, operations 90d\) and "
                     r"will be removed by the next purge", note) and "demo server itself does not purge" in note


def test_serves_the_dashboard_with_the_printed_login(tmp_path):
    proc = subprocess.Popen([*DEMO, "--db", str(tmp_path / "d.db"), "--port", "0", "--events", "2000", "--days", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        url = None
        deadline = time.monotonic() + 90
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"demo ended early: {''.join(lines)} {proc.stderr.read()}"
            lines.append(line)
            match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            url = match.group(1) if match else None
        password = re.search(r"Password: +(\S+)", "".join(lines)).group(1)
        with httpx.Client(base_url=url, timeout=10) as client:
            form = client.get("/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
            login = client.post("/login", data={"username": "demo", "password": password, "next": "/",
                                                "csrf_token": csrf})
            assert login.status_code == 303
            stats = client.get("/api/v1/stats/summary", params={"range": "30d"}).json()
            assert stats["panels"]["summary"]["rows"][0][0] == 2000
            assert client.get("/").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert proc.returncode == 0


def test_a_busy_port_or_a_directory_is_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("--db", str(tmp_path / "d.db"), "--port", str(port), "--events", "10")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("voxtrail: error: cannot listen on 127.0.0.1:")
    assert "Traceback" not in result.stderr and not (tmp_path / "d.db").exists()
    result = run("--db", str(tmp_path), "--no-serve")
    assert result.returncode == 1 and "is a directory" in result.stderr and "Traceback" not in result.stderr

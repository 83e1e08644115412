"""A real `voxtrail serve` under hostile or heavy clients (issue 10): slow request heads and
bodies, a burst of dashboard loads bigger than the connection pool, forged proxy headers, HSTS."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from voxtrail.store import Store, accounts
from web_support import PASSWORD, Server, csrf_of, self_signed_cert


def address_of(server: Server) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return parts.hostname, parts.port


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection or ``seconds`` pass: (closed, what was read)."""
    sock.settimeout(seconds)
    data = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return True, data
            data += chunk
    except (TimeoutError, socket.timeout):
        return False, data
    except ConnectionResetError:
        return True, data
    return False, data


def test_slow_heads_and_stalled_bodies_are_cut_off(sqlite_url):
    with Store.open(sqlite_url) as store:
        _, token = accounts.create_token(store.engine, "node-1")
    with Server("--db", sqlite_url, "--header-timeout", "1", "--body-timeout", "1.5") as server:
        host, port = address_of(server)
        started = time.monotonic()
        silent = socket.create_connection((host, port))  # connects, says nothing
        slowloris = socket.create_connection((host, port))
        slowloris.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        dripping = socket.create_connection((host, port))
        dripping.sendall(b"GET /healthz HTTP/1.1\r\n")
        stalled = socket.create_connection((host, port))
        stalled.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
                        + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{\"request_id\"")
        trickle = socket.create_connection((host, port))
        trickle.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                        b"Content-Length: 100000\r\n\r\n")

        def drip(sock, data: bytes) -> None:  # a byte every 0.3 s: each read is quick, the whole is not
            try:
                for byte in data:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.3)
            except OSError:
                pass  # the server closed it: what the test wants

        drips = [threading.Thread(target=drip, args=(dripping, b"X-Header-" * 10), daemon=True),
                 threading.Thread(target=drip, args=(trickle, b"username=" + b"a" * 40), daemon=True)]
        for t in drips:
            t.start()
        results = {name: closed_within(sock, 6) for name, sock in
                   (("silent", silent), ("slowloris", slowloris), ("dripping", dripping), ("stalled", stalled),
                    ("trickle", trickle))}
        elapsed = time.monotonic() - started
        for sock in (silent, slowloris, dripping, stalled, trickle):
            sock.close()
        assert all(closed for closed, _ in results.values()), {k: v[0] for k, v in results.items()}
        assert elapsed < 6, elapsed
        assert results["slowloris"][1].startswith(b"HTTP/1.1 408 ")
        for name in ("stalled", "trickle"):
            answer = results[name][1]
            assert answer.startswith(b"HTTP/1.1 408 "), (name, answer[:200])
            assert b"x-content-type-options: nosniff" in answer.lower()
        # ...and the server still serves everyone else, and stored nothing half-sent.
        assert httpx.get(server.url + "healthz", timeout=5).json() == {"status": "ok"}
    with Store.open(sqlite_url) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM tts_events").scalar() == 0
    assert "Traceback" not in server.output()
    assert "did not arrive within 1.5 s" in server.output()


def test_a_burst_bigger_than_the_pool_gets_quick_answers_and_one_sigint_stops(sqlite_url):
    """48 concurrent dashboard loads against the default pool (5 + 10 overflow): each is a 200 or
    a quick 503 with Retry-After, never a 500; /healthz answers at once meanwhile; the log has
    no traceback; one SIGINT stops the server."""
    with Store.open(sqlite_url) as store:
        _, token = accounts.create_token(store.engine, "dash", scope="read")
    server = Server("--db", sqlite_url)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        health_times: list[float] = []
        stop = threading.Event()

        def poll_health() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    start = time.monotonic()
                    assert http.get(server.url + "healthz").status_code == 200
                    health_times.append(time.monotonic() - start)
                    time.sleep(0.05)

        def load(i: int) -> httpx.Response:
            with httpx.Client(timeout=60) as http:
                return http.get(server.url + "api/v1/stats", params={"range": "30d"}, headers=headers)

        poller = threading.Thread(target=poll_health, daemon=True)
        poller.start()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=48) as pool:
            answers = list(pool.map(load, range(96)))
        burst = time.monotonic() - started
        stop.set()
        poller.join(timeout=30)
        codes = sorted({a.status_code for a in answers})
        assert set(codes) <= {200, 503}, codes
        assert any(a.status_code == 200 for a in answers)
        for busy in (a for a in answers if a.status_code == 503):
            assert busy.headers["retry-after"].isdigit() and "busy" in busy.json()["error"]
        assert burst < 25, burst
        assert health_times and max(health_times) < 3, max(health_times)
        # One SIGINT, with requests still running, ends the process promptly and cleanly.
        with ThreadPoolExecutor(max_workers=24) as pool:
            running = [pool.submit(load, i) for i in range(24)]
            time.sleep(0.3)
            sent = time.monotonic()
            server.proc.send_signal(signal.SIGINT)
            server.proc.wait(timeout=15)
            stopped = time.monotonic() - sent
            for future in running:
                try:
                    future.result()
                except httpx.HTTPError:
                    pass  # cut off by the shutdown: fine
        assert server.proc.returncode == 0 and stopped < 10, (server.proc.returncode, stopped)
    finally:
        server.stop()
    log = server.output()
    assert "Traceback" not in log and "QueuePool limit" not in log, log[-3000:]
    assert log.count("database busy") <= 2


def test_forwarded_headers_are_believed_only_from_configured_proxies(sqlite_url):
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    with Server("--db", sqlite_url) as server:
        httpx.get(server.url + "healthz", headers=forged, timeout=10)
        time.sleep(0.3)
        log = server.output()
    assert "203.0.113.9" not in log and '127.0.0.1:' in log
    with Server("--db", sqlite_url, "--forwarded-allow-ips", "127.0.0.1, 10.0.0.0/8") as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            http.get("/healthz", headers={"X-Forwarded-For": "198.51.100.7, 10.1.2.3"})
            http.get("/healthz", headers={"X-Forwarded-For": "<script>alert(1)</script>"})
            http.get("/healthz", headers={"X-Forwarded-For": "198.51.100.8, not-an-ip, 10.9.9.9"})
            over_tls = http.get("/login", headers={"X-Forwarded-Proto": "https"})
            assert over_tls.headers["strict-transport-security"].startswith("max-age=")
            assert "strict-transport-security" not in http.get("/login").headers
        time.sleep(0.3)
        log = server.output()
    assert "198.51.100.7:0" in log  # the rightmost address that is not a trusted proxy
    assert "<script>" not in log and "198.51.100.8" not in log
    assert "10.9.9.9:0" in log  # a garbage entry ends the walk at the last good (trusted) hop


@pytest.mark.parametrize("value", ["10.0.0.0/33", "localhost", "1.2.3.4,,nope"])
def test_a_bad_forwarded_allow_ips_is_one_line(sqlite_url, value):
    result = subprocess.run(["voxtrail", "serve", "--db", sqlite_url, "--port", "0", "--forwarded-allow-ips", value],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "--forwarded-allow-ips" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_hsts_over_tls(sqlite_url, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    with Store.open(sqlite_url) as store:
        accounts.add_user(store.engine, "alice", "viewer", PASSWORD)
    with Server("--db", sqlite_url, "--certfile", str(cert), "--keyfile", str(key)) as server:
        with httpx.Client(base_url=server.url, verify=False, follow_redirects=False, timeout=30) as http:
            for response in (http.get("/login"), http.get("/nowhere"), http.post("/login", data={})):
                assert response.headers["strict-transport-security"] == "max-age=31536000", response.status_code
            assert http.get("/admin/", headers={"Host": "evil.example"}).headers["location"] == "/admin"

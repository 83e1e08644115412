"""Helpers for the web tests: an app on a fresh database, logging in, a real `voxtrail serve`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from voxtrail.store import Store, accounts
from voxtrail.web.app import create_app
from voxtrail.web.settings import WebSettings

#: The web-platform's own routers (the dashboard's are tested by their own tests).
PLATFORM_ROUTERS = ("voxtrail.web.auth", "voxtrail.web.admin", "voxtrail.web.ingest", "voxtrail.web.metrics")
PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def fast_password_hashing(monkeypatch):
    """Cheap Argon2 parameters for in-process tests: each default hash costs ~0.1-0.5 s, and the
    tests hash hundreds of times. Subprocess tests (the CLI, `voxtrail serve`) keep the real ones."""
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    accounts._dummy_hash.cache_clear()
    yield
    accounts._dummy_hash.cache_clear()


def make_app(db_url: str, routers=PLATFORM_ROUTERS, **settings):
    return create_app(WebSettings(db=db_url, **settings), router_modules=routers)


def add_user(app_or_store, name: str, role: str, password: str = PASSWORD):
    engine = app_or_store.state.store.engine if hasattr(app_or_store, "state") else app_or_store.engine
    return accounts.add_user(engine, name, role, password)


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no csrf_token field in the page"
    return match.group(1)


def login(client, name: str, password: str = PASSWORD, next_url: str = "/", expect: int = 303):
    form = client.get("/login")
    assert form.status_code == 200
    response = client.post("/login", data={"username": name, "password": password, "next": next_url,
                                           "csrf_token": csrf_of(form.text)}, follow_redirects=False)
    assert expect is None or response.status_code == expect, response.text[:500]
    return response


def client_for(app) -> TestClient:
    return TestClient(app, follow_redirects=False)


class Server:
    """`voxtrail serve` in a subprocess on a free port; ``url`` is what it printed."""

    def __init__(self, *args: str, env: dict | None = None, timeout: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "voxtrail", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.url = self._wait_for_url(timeout)
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr_lines), daemon=True).start()

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        self.stdout_lines.append(line)
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout_lines), daemon=True).start()
        match = re.search(r"(https?://\S+/)", line)
        if not match:
            self.stop()
            raise AssertionError(f"serve printed no URL: {line!r} {self.proc.stderr.read()}")
        url = match.group(1)
        import httpx

        while time.monotonic() < deadline:
            try:
                httpx.get(url + "healthz", verify=False, timeout=2)
                return url
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError("serve did not answer in time")

    @staticmethod
    def _drain(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return "".join(self.stdout_lines + self.stderr_lines)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def open_store(url: str) -> Store:
    return Store.open(url)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key

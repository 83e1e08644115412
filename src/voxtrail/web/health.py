"""``/healthz`` that answers within a few seconds whatever else the server is doing.

The check runs on a pool of its own (a copy of the store's, with the same connect settings
and hooks), on a thread of its own, one check at a time: requests that fill the store's pool,
or every worker thread, cannot make it wait, and a flood of health checks cannot open more than
one connection. A check that takes longer than ``timeout`` (an unreachable server) answers
"unavailable"; concurrent requests share the answer of the check under way.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa


class DatabaseHealth:
    def __init__(self, engine: sa.Engine, timeout: float = 3.0) -> None:
        self.timeout = timeout
        self._pool = engine.pool.recreate()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voxtrail-health")
        self._running: asyncio.Future | None = None

    def _probe(self) -> bool:
        try:
            conn = self._pool.connect()
            try:
                cursor = conn.cursor()
                cursor.execute("SELECT 1")
                cursor.fetchall()
                cursor.close()
            finally:
                conn.close()
        except Exception:  # noqa: BLE001 - any failure to run SELECT 1 is "unavailable"
            return False
        return True

    async def ok(self) -> bool:
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().run_in_executor(self._thread, self._probe)
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), self.timeout)
        except TimeoutError:
            return False  # the probe goes on; the next request waits for it, not a new one

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        self._pool.dispose()

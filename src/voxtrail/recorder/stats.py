"""Counters a Recorder exposes through ``stats()``, and rate-limited warnings."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("voxtrail.recorder")

WARN_EVERY = 10.0  # seconds between two warnings of the same kind


class RateLimitedWarning:
    """Log a warning at most every ``WARN_EVERY`` seconds; the message says how many were folded in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = -WARN_EVERY
        self._suppressed = 0

    def warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < WARN_EVERY:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        if suppressed:
            message += " (%d similar warnings in the last %.0f s)"
            args = (*args, suppressed, WARN_EVERY)
        log.warning(message, *args)


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict(shipped=0, inserted=0, duplicates=0, rejected=0, batches=0, retries=0,
                            dropped=0, adopted=0, torn_bytes=0, spooled_bytes=0)
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.last_shipped_at: datetime | None = None
        self._retry_warning = RateLimitedWarning()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                self._counts[name] += n

    def set(self, **values: int) -> None:
        with self._lock:
            self._counts.update(values)

    def delivered(self, frames: int, done) -> None:
        with self._lock:
            c = self._counts
            c["shipped"] += frames
            c["inserted"] += done.inserted
            c["duplicates"] += done.duplicates
            c["rejected"] += done.rejected
            c["batches"] += 1
            self.last_shipped_at = datetime.now(timezone.utc)

    def failed(self, message: str, backoff: float, warn: bool = True) -> None:
        with self._lock:
            self._counts["retries"] += 1
            self.last_error = message
            self.last_error_at = datetime.now(timezone.utc)
        if warn:
            self._retry_warning.warn("voxtrail: cannot deliver events (%s); they stay spooled, retrying in %.1f s",
                                     message, backoff)

    def problem(self, message: str) -> None:
        """Say what is wrong without counting a retry (e.g. a refused spool directory)."""
        with self._lock:
            self.last_error = message
            self.last_error_at = datetime.now(timezone.utc)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["last_error"] = self.last_error
            out["last_error_at"] = self.last_error_at.isoformat() if self.last_error_at else None
            out["last_shipped_at"] = self.last_shipped_at.isoformat() if self.last_shipped_at else None
        return out

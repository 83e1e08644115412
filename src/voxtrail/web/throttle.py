"""Slowing down password guessing: each failure past a few free ones locks the key for longer.

Keys are a user name and a client address, throttled separately (a user under attack from
many addresses, or one address trying many names). The lock doubles with each further
failure (1 s, 2 s, 4 s, ... up to ``max_delay``) and is forgotten an hour after the last
failure. A name that does not exist is throttled exactly like one that does, so the answers
reveal nothing about which users exist. State is in memory: ``voxtrail serve`` is one process,
and a restart giving an attacker a few more guesses against Argon2 hashes is acceptable.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Entry:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class Throttle:
    def __init__(self, free_attempts: int, base_delay: float = 1.0, max_delay: float = 900.0,
                 forget_after: float = 3600.0, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free_attempts = free_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_keys = max_keys
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def _entry(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last_failure > self.forget_after:
            del self._entries[key]
            return None
        return entry

    def wait(self, key: str) -> float:
        """Seconds before ``key`` may try again (0 when it may now)."""
        now = self.clock()
        entry = self._entry(key, now)
        return max(0.0, entry.locked_until - now) if entry else 0.0

    def failed(self, key: str) -> None:
        now = self.clock()
        entry = self._entry(key, now) or _Entry()
        entry.failures += 1
        entry.last_failure = now
        beyond = entry.failures - self.free_attempts
        if beyond >= 0:
            entry.locked_until = now + min(self.max_delay, self.base_delay * 2 ** min(beyond, 30))
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_keys:  # bounded memory under a flood of names
            self._entries.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._entries.pop(key, None)


class LoginThrottle:
    """Per user name and per client address; an attempt waits for the longer of the two."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.by_user = Throttle(free_attempts=5, clock=clock)
        # Many people may share an address (an office behind NAT): more free attempts there.
        self.by_address = Throttle(free_attempts=20, clock=clock)

    def wait(self, user: str, address: str) -> float:
        return max(self.by_user.wait(user.casefold()), self.by_address.wait(address))

    def failed(self, user: str, address: str) -> None:
        self.by_user.failed(user.casefold())
        self.by_address.failed(address)

    def succeeded(self, user: str) -> None:
        # The address keeps its failures: logging in with one's own account must not buy
        # more guesses at someone else's.
        self.by_user.succeeded(user.casefold())

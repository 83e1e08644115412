"""Slowing down password guessing: each failure past a few free ones locks the key for longer.

Keys are a user name and a client address, throttled separately (a user under attack from
many addresses, or one address trying many names). The lock doubles with each further
failure (1 s, 2 s, 4 s, ... up to ``max_delay``) and is forgotten an hour after the last
failure. A name is keyed by :func:`voxtrail.store.accounts.name_key`, so ``Admin`` and
``admin`` share a lock (all invalid names share one: none can log in); an IPv6 address by its
/64 (one machine usually has the whole prefix).

The counts are in memory, bounded to ``max_keys`` per table (the least recently failed key goes
first), so a flood of invented names or addresses cannot exhaust memory. That bound must not
let a flood unlock an account: a real user's failures are also in the users table
(``failed_logins``, ``last_failed_login_at``), and :meth:`LoginThrottle.wait` takes the longer of
the two locks, so pushing "admin" out of memory, or restarting the server, leaves it locked. A
name that does not exist is throttled exactly like one that does, so the answers reveal nothing
about which users exist.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from voxtrail.store.accounts import is_valid_name, name_key, utcnow

#: The one key of every invalid name: none can log in, and a flood of long invented ones must
#: not fill memory with their text.
INVALID_NAME_KEY = "\0invalid"


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

    def delay(self, failures: int) -> float:
        """How long ``failures`` failures in a row lock a key (0 within the free attempts)."""
        beyond = failures - self.free_attempts
        return 0.0 if beyond < 0 else min(self.max_delay, self.base_delay * 2 ** min(beyond, 30))

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
        if entry.failures >= self.free_attempts:
            entry.locked_until = now + self.delay(entry.failures)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_keys:  # bounded memory under a flood of names
            self._entries.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


def user_key(name: str) -> str:
    return name_key(name) if is_valid_name(name) else INVALID_NAME_KEY


def address_key(address: str) -> str:
    """An IPv4 address as is, an IPv6 address as its /64 prefix."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


#: A user's recorded failures: (failed logins since the last success, when the last one was).
Recorded = tuple[int, "datetime | None"]


class LoginThrottle:
    """Per user name and per client address; an attempt waits for the longest lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000,
                 wall_clock: Callable[[], datetime] = utcnow) -> None:
        self.by_user = Throttle(free_attempts=5, clock=clock, max_keys=max_keys)
        # Many people may share an address (an office behind NAT): more free attempts there.
        self.by_address = Throttle(free_attempts=20, clock=clock, max_keys=max_keys)
        self.wall_clock = wall_clock

    def wait(self, user: str, address: str, recorded: Recorded | None = None) -> float:
        """Seconds to wait; ``recorded`` is the user's failures from the users table, if it exists."""
        return max(self.by_user.wait(user_key(user)), self.by_address.wait(address_key(address)),
                   self._recorded_wait(recorded))

    def _recorded_wait(self, recorded: Recorded | None) -> float:
        if not recorded or recorded[1] is None:
            return 0.0
        failures, last = recorded
        since = (self.wall_clock() - last).total_seconds()
        if since > self.by_user.forget_after or failures < self.by_user.free_attempts:
            return 0.0
        return max(0.0, self.by_user.delay(failures) - since)

    def failed(self, user: str, address: str) -> None:
        self.by_user.failed(user_key(user))
        self.by_address.failed(address_key(address))

    def succeeded(self, user: str) -> None:
        # The address keeps its failures: logging in with one's own account must not buy
        # more guesses at someone else's.
        self.by_user.succeeded(user_key(user))

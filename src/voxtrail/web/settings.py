"""What a running web app needs to know: one frozen dataclass, built by ``voxtrail serve``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from voxtrail.web.middleware import Network
from voxtrail.query.prometheus import DEFAULT_MAX_LABEL_VALUES

MetricsAccess = Literal["public", "token", "session"]
METRICS_ACCESS = ("public", "token", "session")
DEFAULT_MAX_BODY = 10 * 1024 * 1024  # 10 MiB


@dataclass(frozen=True)
class WebSettings:
    db: str
    host: str = "127.0.0.1"
    port: int = 8000
    #: Who may read /metrics: anyone, a bearer token with scope read (or a session), a session only.
    metrics_access: MetricsAccess = "token"
    #: Values of each /metrics label with their own series; the rest are summed as __other__.
    metrics_label_values: int = DEFAULT_MAX_LABEL_VALUES
    #: Largest request body accepted by POST /api/v1/events, in bytes (413 beyond).
    max_body: int = DEFAULT_MAX_BODY
    #: Mark cookies Secure: set when serving TLS, or behind a proxy that terminates TLS.
    secure_cookies: bool = False
    #: A session ends this long after login, whatever happens...
    session_lifetime: timedelta = timedelta(hours=12)
    #: ...or after this long without a request.
    session_idle_timeout: timedelta = timedelta(hours=2)
    #: Retention ages (voxtrail.store.purge.Retention) applied by a purge every ``purge_every``;
    #: None: the server purges nothing.
    retention: Any = None
    purge_every: timedelta | None = timedelta(days=1)
    first_purge_after: timedelta = timedelta(minutes=1)
    #: Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (``--forwarded-allow-ips``);
    #: empty: nobody's, the peer's address is the client's.
    forwarded_allow_ips: tuple[Network, ...] = ()
    #: A request's line and headers must arrive within this many seconds of its first byte...
    header_timeout: float = 10.0
    #: ...and its body within this many seconds of its headers (408 and closed otherwise).
    body_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.metrics_access not in METRICS_ACCESS:
            raise ValueError(f"metrics access must be one of {', '.join(METRICS_ACCESS)}, not {self.metrics_access!r}")
        if self.max_body <= 0:
            raise ValueError("the body size limit must be positive")
        if not (self.header_timeout > 0 and self.body_timeout > 0):
            raise ValueError("the header and body timeouts must be positive")
        if self.metrics_label_values < 1:
            raise ValueError("metrics label values must be at least 1")

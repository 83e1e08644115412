"""uvicorn's h11 protocol with a deadline for each request's head (its line and headers).

uvicorn closes an idle kept-alive connection after a few seconds, but once a byte of a request
has arrived it waits for the rest for ever: a client sending one header line a minute (slowloris)
holds a connection as long as it likes, and a few thousand such clients hold them all. Here a
request head must be complete within ``header_timeout`` seconds of its first byte (or of the
connection's opening); otherwise the connection gets a 408 and is closed. The body's deadline
is the app's (:class:`voxtrail.web.middleware.BodyTimeout`).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_BODY = b"the request head did not arrive in time\n"
_TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
              b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BODY), _BODY))


class TimedH11Protocol(H11Protocol):
    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # IDLE: h11 has not seen a whole request head yet (the first one, or the next on a
        # kept-alive connection), so the bytes so far are part of one that must finish in time.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            # Not through h11: it cannot answer a request it has not seen.
            self.transport.write(_TIMED_OUT)
        self.transport.close()


def protocol_with_timeouts(header_timeout: float) -> type[TimedH11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with this head deadline."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": header_timeout})

"""The ASGI layers around the whole app, outside the framework's own error handling, so that
what they do holds for every response, errors included (a 500 from an unhandled exception, a
404 or 405 from the router, a 400 raised before any route ran).

From the outside in (:func:`wrap`): :class:`ForwardedFor` (the client's address, from a trusted
proxy only), :class:`SecurityHeaders` (and relative redirects), :class:`BodyTimeout`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("voxtrail.web")

#: No inline scripts, nothing from other origins. Styles may be inline: charting libraries set
#: style attributes; scripts are what matters.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
#: Sent over HTTPS only (a browser ignores it over plain HTTP): a year, this host only, since
#: voxtrail cannot know what else is served under the parent domain.
HSTS = (b"strict-transport-security", b"max-age=31536000")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def relative_location(location: bytes) -> bytes:
    """``http://any.host/admin?x=1`` -> ``/admin?x=1``; a path stays as it is.

    The app's own redirects are all paths. The framework's trailing-slash redirect is absolute,
    built from the Host header the client sent, so it could point at any site. A path that
    would start with ``//`` (a link to another host) keeps one slash.
    """
    text = location.decode("latin-1")
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() in ("http", "https") and "/" not in scheme:
        _, slash, path = rest.partition("/")
        text = "/" + path if slash else "/"
    if text.startswith("//") or text.startswith("/\\"):
        text = "/" + text.lstrip("/\\")
    return text.encode("latin-1")


class SecurityHeaders:
    """Every response gets the security headers (HSTS too over HTTPS), pages with data are not
    cached, and every ``Location`` is a path on this site (see :func:`relative_location`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, relative_location(v) if k.lower() == b"location" else v)
                           for k, v in message.get("headers", [])]
                names = {name.lower() for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                if https and HSTS[0] not in names:
                    headers.append(HSTS)
                if not static and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``["127.0.0.1", "10.0.0.0/8"]`` as networks; ValueError naming a bad one."""
    out = []
    for value in values:
        value = value.strip()
        if not value:
            continue
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network (e.g. 127.0.0.1, 10.0.0.0/8, ::1)") from None
    return tuple(out)


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as proxies write it in X-Forwarded-For (``1.2.3.4``, ``1.2.3.4:5678``,
    ``[2001:db8::1]:5678``, ``2001:db8::1``), or None when it is not one."""
    text = value.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ForwardedFor:
    """The client's address and scheme from ``X-Forwarded-For`` / ``X-Forwarded-Proto``, when
    the connection comes from a trusted proxy (``--forwarded-allow-ips``); otherwise, and by
    default, the headers are ignored and the peer's address is the client's.

    The client is the rightmost address that is not itself a trusted proxy (each proxy appends
    the address it saw). An entry that is not an IP address ends the walk: the last address
    known good (a trusted proxy's) is used, so the access log and the login throttle only ever
    see IP addresses.
    """

    def __init__(self, app: ASGIApp, trusted: tuple[Network, ...]) -> None:
        self.app = app
        self.trusted = trusted

    def _is_trusted(self, ip) -> bool:
        return any(ip.version == net.version and ip in net for net in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client") if scope["type"] in ("http", "websocket") else None
        peer = parse_ip(client[0]) if client else None
        if self.trusted and peer is not None and self._is_trusted(peer):
            forwarded, proto = [], None
            for name, value in scope.get("headers", []):
                if name == b"x-forwarded-for":
                    forwarded += value.decode("latin-1").split(",")
                elif name == b"x-forwarded-proto":
                    proto = value.decode("latin-1").strip().lower()
            address = peer
            for entry in reversed(forwarded):
                ip = parse_ip(entry)
                if ip is None:
                    break
                address = ip
                if not self._is_trusted(ip):
                    break
            # In place, as uvicorn's own proxy layer does: its access log then shows the client.
            if address != peer:
                scope["client"] = (str(address), 0)
            if proto in ("http", "https") and scope["type"] == "http":
                scope["scheme"] = proto
        await self.app(scope, receive, send)


class BodyTimeout:
    """A request's body must arrive within ``seconds`` of its head, or the request is answered
    408 and the connection closed: a client that stalls mid-body (or trickles a byte now and
    then) cannot hold a connection and a worker. The app sees the client as gone."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.seconds
        state = {"body_done": False, "timed_out": False, "started": False}

        async def timed_receive() -> Message:
            if state["timed_out"]:
                return {"type": "http.disconnect"}
            if state["body_done"]:  # later calls wait for the client to leave: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                state["timed_out"] = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message: Message) -> None:
            if state["timed_out"]:
                return  # the app's answer to a client that is, for it, gone
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not state["timed_out"]:
                raise
        if state["timed_out"]:
            client = scope.get("client")
            log.warning("%s %s from %s: the request body did not arrive within %g s; closing the connection",
                        scope["method"], scope["path"], client[0] if client else "unknown", self.seconds)
            if not state["started"]:
                body = f"the request body did not arrive within {self.seconds:g} s\n".encode()
                await send({"type": "http.response.start", "status": 408, "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})


def wrap(app: ASGIApp, *, trusted_proxies: tuple[Network, ...], body_timeout: float | None) -> ASGIApp:
    """``app`` inside the layers, in the order the module's docstring gives."""
    if body_timeout is not None:
        app = BodyTimeout(app, body_timeout)
    return ForwardedFor(SecurityHeaders(app), trusted_proxies)

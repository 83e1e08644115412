"""``voxtrail serve``: the dashboard, audit pages, HTTP ingest and /metrics in one process.

Listens on 127.0.0.1 by default. Another address is refused while no user exists: a fresh
install must not put an open door on the network before anyone could log in.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

import click

from voxtrail.cli.common import db_options, opened_store
from voxtrail.cli.output import fail
from voxtrail.cli.params import Age, ByteSize, LocalPath, Name, Seconds

def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before starting uvicorn so that port 0 gives a port we can print."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"cannot listen on {host}: {exc.strerror}")
    except UnicodeError:  # the IDNA encoding of a name such as '..' or a 64-character label
        fail(f"cannot listen on {host!r}: not a host name or an IP address")
    family, kind, proto, _, address = infos[0]
    # proto must say IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only then, and
    # without it every response on a kept-alive connection waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


#: How long a request waits for a pooled database connection before it is answered 503: a
#: burst of dashboard loads is told to retry at once instead of queueing for SQLAlchemy's 30 s
#: (and holding a worker thread all that time).
POOL_TIMEOUT = 3.0
#: After one Ctrl-C (SIGINT/SIGTERM), requests still running get this long to finish.
GRACEFUL_SHUTDOWN = 5


def _log_config(log_level: str) -> dict:
    """uvicorn's logging, with voxtrail's own loggers (retention runs, ingest quarantines) on the
    same stream at the same level: unconfigured, their info lines would be dropped."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["voxtrail"] = {"handlers": ["default"], "level": log_level.upper(), "propagate": False}
    return config


def run_server(settings, store, *, certfile: str | None = None, keyfile: str | None = None,
               log_level: str = "info", announce: str = "serving") -> None:
    """Serve ``create_app(settings, store)`` until interrupted; prints the URL first.

    Shared with ``voxtrail demo``. The caller keeps ownership of ``store``.
    """
    import uvicorn

    from voxtrail.web.app import create_app
    from voxtrail.web.protocol import protocol_with_timeouts

    app = create_app(settings, store)
    sock = bind_socket(settings.host, settings.port)
    # proxy_headers off: uvicorn would believe X-Forwarded-For from 127.0.0.1 verbatim; the
    # app's ForwardedFor layer believes only --forwarded-allow-ips, and only IP addresses.
    config = uvicorn.Config(app, log_level=log_level, ssl_certfile=certfile, ssl_keyfile=keyfile,
                            server_header=False, lifespan="on", proxy_headers=False,
                            http=protocol_with_timeouts(settings.header_timeout),
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN, log_config=_log_config(log_level))
    try:
        config.load()  # reads the TLS files now, so a bad one is one line, not a traceback
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        sock.close()
        fail(f"cannot serve HTTPS with {certfile} and {keyfile}: {exc}")
    print(f"voxtrail: {announce} {url_of(sock, bool(certfile))} (database {store.display_url})", flush=True)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@click.command("serve")
@db_options
@click.option("--host", type=Name(), default="127.0.0.1", show_default=True, envvar="VOXTRAIL_HOST", show_envvar=True,
              help="Address to listen on. Anything but loopback is refused until a user exists.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, envvar="VOXTRAIL_PORT",
              show_envvar=True, help="Port to listen on (0: any free port).")
@click.option("--metrics", "metrics_access", type=click.Choice(["public", "token", "session"]), default="token",
              show_default=True, envvar="VOXTRAIL_METRICS", show_envvar=True,
              help="Who may read /metrics: anyone, an API token with scope read (or a session), a session only.")
@click.option("--metrics-label-values", type=click.IntRange(1, 100_000), default=100, show_default=True,
              envvar="VOXTRAIL_METRICS_LABEL_VALUES", show_envvar=True, metavar="N",
              help="Values of each /metrics label (node, model, emotion) with their own series; "
                   "the others are summed as __other__.")
@click.option("--max-body", type=ByteSize(), default="10MiB", show_default=True, envvar="VOXTRAIL_MAX_BODY",
              show_envvar=True, help="Largest body POST /api/v1/events accepts (413 beyond).")
@click.option("--certfile", type=LocalPath(), envvar="VOXTRAIL_CERTFILE", show_envvar=True,
              help="TLS certificate (PEM): serve HTTPS; cookies are then Secure.")
@click.option("--keyfile", type=LocalPath(), envvar="VOXTRAIL_KEYFILE", show_envvar=True,
              help="TLS private key (PEM) for --certfile.")
@click.option("--secure-cookies", is_flag=True, envvar="VOXTRAIL_SECURE_COOKIES", show_envvar=True,
              help="Mark cookies Secure without --certfile: for a TLS-terminating proxy in front.")
@click.option("--purge-every", type=Age("--purge-every"), default="1d", show_default=True,
              envvar="VOXTRAIL_PURGE_EVERY", show_envvar=True,
              metavar="AGE", help="Apply retention ('voxtrail purge', ages from [retention]) this often: 1d, 12h, "
                                  "or off. The first run is a minute after start.")
@click.option("--forwarded-allow-ips", default="", envvar="VOXTRAIL_FORWARDED_ALLOW_IPS", show_envvar=True,
              metavar="IPS", help="Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For "
                                  "and X-Forwarded-Proto are believed. Default: none.")
@click.option("--header-timeout", type=Seconds(0.1, 3600), default=10, show_default=True,
              envvar="VOXTRAIL_HEADER_TIMEOUT", show_envvar=True, metavar="SECONDS",
              help="A request's line and headers must arrive within this time (408 and closed otherwise).")
@click.option("--body-timeout", type=Seconds(0.1, 86400), default=60, show_default=True,
              envvar="VOXTRAIL_BODY_TIMEOUT", show_envvar=True, metavar="SECONDS",
              help="A request's body must arrive within this time after its headers (408 and closed otherwise).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="Server log level (requests are logged at info).")
def serve_command(db, config_file, host, port, metrics_access, metrics_label_values, max_body, certfile, keyfile,
                  secure_cookies, purge_every, forwarded_allow_ips, header_timeout, body_timeout, log_level) -> None:
    """Serve the dashboard, audit pages, HTTP ingest (POST /api/v1/events) and /metrics.

    \b
    voxtrail user add admin --role admin         # first, someone who can log in
    voxtrail serve --db postgresql://tts@db/tts  # http://127.0.0.1:8000/
    voxtrail serve --host 0.0.0.0 --certfile cert.pem --keyfile key.pem
    """
    from voxtrail.localfs import LocalFileError, check_regular_file
    from voxtrail.store import accounts
    from voxtrail.web.middleware import parse_networks
    from voxtrail.web.settings import WebSettings

    try:
        proxies = parse_networks(forwarded_allow_ips.split(","))
    except ValueError as exc:
        fail(f"--forwarded-allow-ips: {exc}")
    if bool(certfile) != bool(keyfile):
        fail("--certfile and --keyfile go together: give both to serve HTTPS")
    for path in filter(None, (certfile, keyfile)):
        try:
            check_regular_file(path, "TLS file")  # a FIFO would hang the TLS set-up
        except LocalFileError as exc:
            fail(str(exc))
    from voxtrail.config import ConfigError
    from voxtrail.store import purge

    with opened_store(db, None, config_file, pool_timeout=POOL_TIMEOUT) as (store, app_settings):
        try:
            retention = purge.Retention.from_settings(app_settings)
            every = purge.parse_age(purge_every, "--purge-every")
        except ConfigError as exc:
            fail(str(exc))
        if not is_loopback(host) and accounts.count_users(store.engine) == 0:
            fail(f"refusing to listen on {host} while no user exists: create one with "
                 "'voxtrail user add NAME --role admin' first, or listen on 127.0.0.1")
        try:
            settings = WebSettings(db=store.display_url, host=host, port=port, metrics_access=metrics_access,
                                   metrics_label_values=metrics_label_values, max_body=max_body,
                                   secure_cookies=secure_cookies or bool(certfile),
                                   retention=retention, purge_every=every, forwarded_allow_ips=proxies,
                                   header_timeout=header_timeout, body_timeout=body_timeout)
        except ValueError as exc:  # the settings check their values too (the flags' types did already)
            fail(str(exc))
        try:
            run_server(settings, store, certfile=certfile, keyfile=keyfile, log_level=log_level)
        except KeyboardInterrupt:
            sys.exit(0)

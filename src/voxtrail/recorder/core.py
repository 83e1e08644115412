"""``Recorder``: what a TTS service calls. ``record`` appends to the spool and returns.

The caller's thread only masks PII in the event's text fields (docs/masking.md: the spool never
holds it), encodes the event (orjson) and appends one frame to a local file;
the database, HTTP or Redis I/O happens in the shipper thread (:mod:`voxtrail.recorder.shipper`).
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import tempfile
import threading
import weakref
from time import time_ns
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import orjson

from voxtrail.event import FIELD_NAMES, STORE_FIELDS
from voxtrail.redact import mask_url
from voxtrail.recorder.shipper import Drain, Shipper
from voxtrail.recorder.spool import SpoolFull, SpoolWriter, SubSpool, UntrustedPath, prepare_spool_dir
from voxtrail.recorder.stats import RateLimitedWarning, Stats
from voxtrail.recorder.transports import Transport
from voxtrail.transforms.mask import Masker, default_masker
from voxtrail.transforms.normalize import scrub

log = logging.getLogger("voxtrail.recorder")

#: Fields a caller may set: every event field except those saying where a record came from.
RECORDABLE = frozenset(FIELD_NAMES) - {"source", "source_format", "source_file", "source_offset"} - STORE_FIELDS

DEFAULT_MAX_SPOOL_BYTES = 1 << 30  # 1 GiB: ~2 million typical events, days of a busy node's outage
DEFAULT_SEGMENT_BYTES = 16 << 20
DEFAULT_STREAM = "voxtrail:events"
_DUMPS_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY


def default_spool_dir() -> Path:
    if env := os.environ.get("VOXTRAIL_SPOOL_DIR"):
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "voxtrail" / "spool"


#: The random bits of request ids: a generator of our own, seeded from the OS and again in a
#: forked child. Not the random module's: a TTS service seeding it for reproducible sampling
#: (``random.seed(42)`` before each generation) would make ids repeat, and the store would keep
#: one event of each repeat, the others counted as duplicates.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new_request_id() -> str:
    """A new UUID (version 7: 48 bits of Unix milliseconds, then 74 random bits), as text.

    Time-ordered ids land at the end of the database's unique index instead of at random
    pages, and making one costs ~1 µs instead of ``str(uuid.uuid4())``'s ~4 µs. The random
    bits come from :data:`_ids`; ids need to be unique, not secret.
    """
    bits = _ids.getrandbits(74)
    value = ((time_ns() // 1_000_000) << 80) | (0x7 << 76) | ((bits >> 62) << 64) | (0b10 << 62) | (bits & _LOW62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_LOW62 = (1 << 62) - 1


def check_fields(names) -> None:
    unknown = [n for n in names if n not in RECORDABLE]
    if unknown:
        hint = " (set by voxtrail)" if set(unknown) <= set(FIELD_NAMES) else ""
        raise TypeError(f"voxtrail: not an event field{hint}: {', '.join(sorted(unknown))}; "
                        "put free-form facts in attributes={...}")


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy / torch values
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_event(event: dict[str, Any]) -> bytes:
    """The spool payload of an event. Never raises for a value: what JSON (or UTF-8) cannot hold
    is made to fit (:func:`jsonable`), and the shipper then stores the event or, when a value is
    not what its field takes, a reject that names it (the service never sees our exception)."""
    try:
        return orjson.dumps(event, default=_json_default, option=_DUMPS_OPTIONS)
    except TypeError:
        return orjson.dumps(jsonable(event), option=_DUMPS_OPTIONS)


#: Nesting past which :func:`jsonable` stops (orjson stops at 255; the store refuses far less).
_MAX_NESTING = 64


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON types: lone surrogates replaced by U+FFFD, keys made strings,
    integers beyond 64 bits and objects JSON has no type for made strings, cycles and absurd
    nesting cut. The slow path of :func:`encode_event`, taken only when orjson refuses a value."""
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, datetime):
        return value if value.tzinfo is None or _utcoffset_ok(value) else str(value)
    if depth >= _MAX_NESTING:
        return _text_of(value)
    if isinstance(value, Mapping):
        return {scrub(k) if isinstance(k, str) else _text_of(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in value]
    try:
        return jsonable(_json_default(value), depth + 1)
    except Exception:  # noqa: BLE001 - whatever an object's tolist() or fspath() raises
        return _text_of(value)


def _utcoffset_ok(value: datetime) -> bool:
    try:
        value.utcoffset()
    except Exception:  # noqa: BLE001 - a tzinfo of the caller's that fails
        return False
    return True


def _text_of(value: Any) -> str:
    try:
        return scrub(str(value))[:1000]
    except Exception:  # noqa: BLE001 - an object whose __str__ raises
        return f"<{type(value).__name__}>"


def _transport_factory(db: str | None, url: str | None, token: str | None, redis: str | None, stream: str,
                       http_timeout: float) -> tuple[Callable[[Path], Transport], str]:
    """A function making the destination's transport (a fresh one after a fork), and its name."""
    chosen = [name for name, v in (("db", db), ("url", url), ("redis", redis)) if v]
    if len(chosen) > 1:
        raise ValueError(f"Recorder: give one destination, not {' and '.join(chosen)}")
    if url:
        from voxtrail.recorder.http import HttpTransport

        transport = lambda spool: HttpTransport(url, token, timeout=http_timeout, spool_dir=spool)  # noqa: E731
        return transport, f"http {mask_url(url)}"
    if redis:
        from voxtrail.recorder.redis import RedisTransport

        return (lambda spool: RedisTransport(redis, stream)), f"redis {mask_url(redis)} {stream}"
    from voxtrail import config
    from voxtrail.recorder.transports import DatabaseTransport
    from voxtrail.store.engine import normalize_url, shown_url
    from voxtrail.transforms.normalize import normalize

    resolved = db or config.load().db
    shown = shown_url(normalize_url(resolved)[0])
    # record() masked every event before the spool saw it: masking again here would only cost
    # CPU (about 2 µs per distinct text), so the shipper's chain leaves the masker out.
    chain = [normalize]
    return (lambda spool: DatabaseTransport(resolved, chain)), f"db {shown}"


def _resolve_masker(mask: Masker | bool | None) -> Masker:
    if mask is None or mask is True:
        return default_masker()
    if mask is False:
        return Masker.off("Recorder(mask=False)")
    if not isinstance(mask, Masker):
        raise TypeError(f"Recorder(mask=...) takes a Masker, True, False or None, not {type(mask).__name__}")
    return mask


class Recorder:
    """Record TTS generations without ever making the caller wait for a database or network.

    Give one destination: ``db`` (a SQLAlchemy URL; default: ``VOXTRAIL_DB`` / voxtrail.toml /
    ``sqlite:///voxtrail.db``), ``url`` + ``token`` (an HTTP collector, ``voxtrail serve``) or
    ``redis`` (+ ``stream``; ``voxtrail collect`` moves it to a database). ``defaults`` are
    fields added to every event (``node``, ``model``, ``model_version``...). See docs/recorder.md
    for the spool, fsync policies and what each can lose.

    ``mask``: PII masking of text fields in ``record()`` (docs/masking.md): None uses the
    settings' ``[mask]`` table and ``VOXTRAIL_MASK``; a :class:`~voxtrail.transforms.mask.Masker`
    its own policy; False turns masking off (with a warning).
    """

    def __init__(self, db: str | None = None, *, url: str | None = None, token: str | None = None,
                 redis: str | None = None, stream: str = DEFAULT_STREAM, spool_dir: str | os.PathLike | None = None,
                 fsync: str = "interval", fsync_interval: float = 1.0,
                 max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 batch_size: int = 20000, flush_interval: float = 0.2, max_backoff: float = 30.0,
                 close_timeout: float = 10.0, http_timeout: float = 10.0,
                 defaults: Mapping[str, Any] | None = None, mask: Masker | bool | None = None):
        if defaults:
            check_fields(defaults)
        self._masker = _resolve_masker(mask)
        self._new_transport, destination = _transport_factory(db, url, token, redis, stream, http_timeout)
        self.spool_dir = Path(spool_dir) if spool_dir is not None else default_spool_dir()
        #: Why the configured spool directory was refused (None when it is in use).
        self.spool_problem: str | None = None
        try:
            prepare_spool_dir(self.spool_dir)
        except UntrustedPath as exc:
            self._use_private_spool(str(exc))
        self._claim_spool(destination)
        self._options = dict(fsync=fsync, fsync_interval=fsync_interval, max_spool_bytes=max_spool_bytes,
                             segment_bytes=segment_bytes, batch_size=batch_size, flush_interval=flush_interval,
                             max_backoff=max_backoff)
        self.close_timeout = close_timeout
        self._defaults = dict(defaults or {})
        self._stats = self._new_stats()
        self._full_warning = RateLimitedWarning()
        self._closed = False
        self._fork_lock = threading.Lock()
        self._start()
        ref = weakref.ref(self)
        self._atexit = lambda: (r := ref()) is not None and r.close()
        atexit.register(self._atexit)

    def _use_private_spool(self, problem: str) -> None:
        """Another user could have written into the spool directory: nothing in it is read or
        shipped. Recording goes on in a new private directory (mkdtemp: 0700, a fresh name), so the
        service neither fails nor loses what the destination can take."""
        self.spool_problem = problem
        self.spool_dir = Path(tempfile.mkdtemp(prefix="voxtrail-spool-"))
        log.error("voxtrail: %s. This Recorder spools in %s instead until that is fixed: what it has not "
                  "delivered when its process ends stays there", problem, self.spool_dir)

    def _claim_spool(self, destination: str) -> None:
        """One spool directory serves one destination: an adopted orphan goes where it was meant to."""
        marker = self.spool_dir / "destination"
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            existing = marker.read_text().strip()
            if existing and existing != destination:
                raise ValueError(f"spool directory {self.spool_dir} belongs to {existing}, not {destination}; "
                                 "give each destination its own spool_dir") from None
            return
        with os.fdopen(fd, "w") as f:
            f.write(destination + "\n")

    def _new_stats(self) -> Stats:
        stats = Stats()
        if self.spool_problem:
            stats.problem(self.spool_problem)
        return stats

    def _start(self) -> None:
        o = self._options
        self._pid = os.getpid()
        self._sub = SubSpool.create(self.spool_dir)
        self._writer = SpoolWriter(self._sub, fsync=o["fsync"], segment_bytes=o["segment_bytes"],
                                   max_bytes=o["max_spool_bytes"])
        own = Drain(self._sub, self._writer, o["fsync"] != "never", self._stats)
        self._shipper = Shipper(self.spool_dir, own, self._new_transport(self.spool_dir), self._stats,
                                batch_size=o["batch_size"], idle_wait=o["flush_interval"],
                                max_backoff=o["max_backoff"],
                                fsync_interval=o["fsync_interval"] if o["fsync"] == "interval" else None,
                                durable=o["fsync"] != "never")
        self._shipper.start()

    def _restart_after_fork(self) -> None:
        """In a forked child (gunicorn --preload): the shipper thread did not survive the fork and
        the parent's files are the parent's; start a sub-spool and shipper of our own."""
        with self._fork_lock:
            if self._pid == os.getpid():
                return
            for fd in (self._writer.fd, self._sub.lock_fd, *(d.sub.lock_fd for d in self._shipper.orphans)):
                if fd >= 0:
                    os.close(fd)
            if self._stats.snapshot()["batches"]:
                log.warning("voxtrail: this Recorder shipped events before fork(); polars (which builds the "
                            "batches) cannot run in a child forked after it ran, so this process's events "
                            "may only be delivered after it exits. Create the Recorder after fork() "
                            "(gunicorn: in post_fork), or record nothing before forking.")
            self._stats = self._new_stats()
            self._start()

    # -- recording -------------------------------------------------------------------------

    def record(self, **fields: Any) -> str:
        """Append one event to the spool and return its ``request_id``; never waits on the network.

        Any subset of event fields; ``request_id`` defaults to a new UUID, ``ts`` to now (UTC,
        µs; a naive datetime is taken as UTC), ``status`` to ``success``. An unknown field name
        raises TypeError (a mistake in the code, not in a value). A value is never refused here:
        one that is not what its field takes becomes a reject with the reason when shipped, and
        text that UTF-8 cannot hold (a lone surrogate) is stored with U+FFFD in its place. At the
        spool's bound the event is dropped and counted (``stats()["dropped"]``, a warning),
        never raising into the service.
        """
        if not fields.keys() <= RECORDABLE:
            check_fields(fields)
        return self.record_event(fields)

    def record_event(self, event: dict[str, Any]) -> str:
        """``record`` for a dict whose keys are known to be valid (it is modified)."""
        if self._closed:
            raise RuntimeError("voxtrail: this Recorder is closed")
        if self._defaults:
            event = {**self._defaults, **event}
        rid = event.get("request_id")
        if rid is None:
            rid = event["request_id"] = new_request_id()
        if self._masker.enabled:
            self._masker.mask_event(event)
        if event.get("ts") is None:
            event["ts"] = datetime.now(timezone.utc)
        if "status" not in event:
            event["status"] = "success"
        payload = encode_event(event)
        if self._pid != os.getpid():
            self._restart_after_fork()
        try:
            self._writer.append(payload)
        except SpoolFull:
            self._stats.add(dropped=1)
            self._full_warning.warn("voxtrail: spool %s is full (max_spool_bytes=%d): event dropped; "
                                    "%d dropped so far. Is the destination reachable? (stats()['last_error'])",
                                    self._sub.path, self._writer.max_bytes, self._stats.snapshot()["dropped"])
        except OSError as exc:  # a full or failing disk must not take the TTS service down
            self._stats.add(dropped=1)
            self._full_warning.warn("voxtrail: cannot write to spool %s (%s): event dropped",
                                    self._sub.path, exc.strerror or exc)
        return rid

    def generation(self, **fields: Any):
        """Context manager and decorator recording one generation; see :class:`Generation`."""
        from voxtrail.recorder.generation import Generation

        return Generation(self, fields)

    # -- control ---------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event recorded so far is delivered; False if ``timeout`` ran out."""
        return self._shipper.flush(timeout)

    def stats(self) -> dict[str, Any]:
        """recorded, shipped, inserted, duplicates, rejected, dropped, spooled_bytes, retries,
        adopted, torn_bytes, last_error (+ when), last_shipped_at, spool path."""
        out = self._stats.snapshot()
        out["recorded"] = self._writer.frames
        out["spooled_bytes"] = self._writer.spooled_bytes
        out["spool"] = str(self._sub.path)
        out["spool_problem"] = self.spool_problem
        return out

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is spooled (waiting up to ``timeout``, default ``close_timeout``), stop.

        Returns True when everything was delivered. What is not stays in the spool directory
        and is delivered by the next Recorder on it.
        """
        if self._closed:
            return True
        self._closed = True
        atexit.unregister(self._atexit)
        if self._pid != os.getpid():
            return False  # a forked child that never recorded: the parent's files are not ours
        delivered = self.flush(self.close_timeout if timeout is None else timeout)
        self._shipper.stop(timeout=self._options["max_backoff"] + 5)
        self._writer.close()
        if delivered and self._shipper.own.caught_up(self._writer.position()):
            self._sub.remove()
        else:
            log.warning("voxtrail: %d bytes of events not delivered yet stay in %s; the next Recorder on %s "
                        "delivers them", self._writer.spooled_bytes, self._sub.path, self.spool_dir)
            self._sub.release()
        for drain in self._shipper.orphans:
            drain.sub.release()
        if self.spool_problem and delivered:
            self._remove_private_spool()
        return delivered

    def _remove_private_spool(self) -> None:
        """Everything was delivered: remove the directory unless other processes (forked workers)
        still spool in it, or it holds events a collector refused (rejected/)."""
        try:
            if os.listdir(self.spool_dir) == ["destination"]:
                (self.spool_dir / "destination").unlink()
                self.spool_dir.rmdir()
        except OSError as exc:
            log.warning("voxtrail: cannot remove the private spool %s: %s", self.spool_dir, exc.strerror or exc)

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

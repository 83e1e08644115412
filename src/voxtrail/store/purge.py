"""Retention: delete raw events older than the configured ages, in short batches.

Two ages, because the seeds keep two kinds of data for different times: *audit* events (they
carry what a user asked: ``user_id`` or ``text_input``; seed 004 keeps them 180 days) and
*operations* events (latency and status only, as in seed 000's logs: 90 days). Quarantined
rejects follow the operations age.

Rollups are never touched, so the dashboard's long-range charts keep their history. Each batch
is its own transaction that deletes at most ``batch`` rows, so no lock is held for long. Before
deleting, a batch records what the hash chain needs to stay verifiable (store/chain.py): a gap
per run of deleted rows in a link that keeps rows, or the link marked purged when none remain.
What retention removed is remembered as a horizon: a later write of an event older than the
horizon is quarantined instead of stored again (it would be counted twice in the rollups).
"""

from __future__ import annotations

import bisect
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import polars as pl
import sqlalchemy as sa

from voxtrail import config
from voxtrail.store import state
from voxtrail.store.schema import chain_gaps, chain_links, tts_events, tts_rejects, web_sessions

DEFAULT_AUDIT = "180d"
DEFAULT_OPERATIONS = "90d"
#: ASCII digits only: ``\d`` would also take other scripts' digits.
#: Read after strip(): one run of spaces at most, so no two quantifiers share characters (linear).
_AGE = re.compile(r"^([0-9]+)\s*([dwh])?$", re.ASCII | re.IGNORECASE)
_UNIT = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1), None: timedelta(days=1)}
_FOREVER = ("off", "never", "0", "forever")
#: The longest age: a century. Keeping data longer is "off", not a number of days.
MAX_AGE = timedelta(days=36525)


def parse_age(value: str | int | None, name: str, origin: str | None = None) -> timedelta | None:
    """``180d``, ``26w``, ``72h`` or a number of days, up to :data:`MAX_AGE`; ``off`` (or 0) is
    None: keep forever. The one parser of every age setting (retention, ``--purge-every``);
    ConfigError naming the setting (``name``, and the flag, variable or key it came from) for
    anything else, an empty value included."""
    if value is None:
        return None
    name = f"{name} = {config.shown(value)}" + (f" ({origin})" if origin and origin != name else "")
    text = str(value).strip().lower() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text in _FOREVER:
        return None
    match = _AGE.match(text) if text else None
    if not match:
        raise config.ConfigError(f"{name}: use a number of days or e.g. 180d, 26w, 72h, or off")
    digits, unit = match.group(1), _UNIT[match.group(2)]
    if len(digits.lstrip("0")) > 7 or int(digits) * unit > MAX_AGE:  # no int() of 5,000 digits
        raise config.ConfigError(f"{name} is longer than {MAX_AGE.days:,} days (a century): use off to keep "
                                 f"data forever")
    return int(digits) * unit


@dataclass(frozen=True)
class Retention:
    audit: timedelta | None
    operations: timedelta | None

    @classmethod
    def from_settings(cls, settings: config.Settings, audit: str | None = None,
                      operations: str | None = None) -> "Retention":
        """``--audit``/``--operations``, else ``VOXTRAIL_RETENTION_*``, else ``[retention]``, else the defaults."""
        section = settings.section("retention")
        ages = []
        for key, flag, default in (("audit", audit, DEFAULT_AUDIT), ("operations", operations, DEFAULT_OPERATIONS)):
            raw, origin = config.pick(flag, f"--{key}", f"VOXTRAIL_RETENTION_{key.upper()}", section, key,
                                      settings.where(key, "retention"))
            ages.append(parse_age(default if raw is None else raw, f"retention {key}", origin))
        return cls(*ages)

    def cutoffs(self, now: datetime) -> "Cutoffs":
        return Cutoffs(now - self.audit if self.audit else None, now - self.operations if self.operations else None)


def age_text(age: timedelta) -> str:
    """An age as the settings spell it: 180d, 36h (or, below an hour, seconds)."""
    seconds = age.total_seconds()
    hours = int(seconds // 3600)
    if hours * 3600 != seconds or not hours:
        return f"{seconds:g}s"
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


def past_retention_note(count: int, retention: "Retention | None") -> str:
    """What import and ingest say about events stored older than the retention ages."""
    ages = ""
    if retention is not None:
        parts = [f"{name} {age_text(age)}" for name, age in (("audit", retention.audit),
                                                             ("operations", retention.operations)) if age]
        ages = f" ({', '.join(parts)})" if parts else ""
    return (f"{count:,} event{'s are' if count != 1 else ' is'} older than the retention{ages} and will be "
            "removed by the next purge ('voxtrail serve' purges a minute after it starts, then daily); "
            "to keep them, set [retention] audit/operations (or VOXTRAIL_RETENTION_AUDIT / "
            "VOXTRAIL_RETENTION_OPERATIONS) to a longer age or \"off\" before serving; docs/retention.md")


@dataclass(frozen=True)
class Cutoffs:
    """Events strictly older than these (UTC-naive) go; None keeps that kind forever."""

    audit: datetime | None
    operations: datetime | None

    def condition(self) -> sa.ColumnElement:
        audit_content = sa.or_(tts_events.c.user_id.is_not(None), tts_events.c.text_input.is_not(None))
        parts = []
        if self.audit is not None:
            parts.append(sa.and_(audit_content, tts_events.c.ts < self.audit))
        if self.operations is not None:
            parts.append(sa.and_(sa.not_(audit_content), tts_events.c.ts < self.operations))
        return sa.or_(*parts) if parts else sa.false()

    def expired(self, frame: pl.DataFrame, constants: dict) -> pl.Expr | None:
        """The same rule for a batch about to be written (None when nothing can be expired)."""
        def present(name: str) -> pl.Expr:
            if name in frame.columns:
                return pl.col(name).is_not_null()
            return pl.lit(constants.get(name) is not None)

        audit_content = present("user_id") | present("text_input")
        parts = []
        if self.audit is not None:
            parts.append(audit_content & (pl.col("ts") < self.audit))
        if self.operations is not None:
            parts.append(~audit_content & (pl.col("ts") < self.operations))
        if not parts or "ts" not in frame.columns:
            return None
        expr = parts[0]
        for part in parts[1:]:
            expr = expr | part
        return expr


@dataclass
class PurgeResult:
    cutoffs: Cutoffs
    dry_run: bool
    events: int = 0
    audit_events: int = 0
    operations_events: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    rejects: int = 0
    sessions: int = 0
    batches: int = 0
    seconds: float = 0.0
    links_purged: int = 0
    gaps: int = 0

    def as_dict(self) -> dict:
        data = asdict(self)
        data["cutoffs"] = {k: v.isoformat() if v else None for k, v in asdict(self.cutoffs).items()}
        for key in ("oldest", "newest"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def preview(engine: sa.Engine, cutoffs: Cutoffs) -> PurgeResult:
    """What a purge would delete, counted without deleting (``voxtrail purge --dry-run``)."""
    result = PurgeResult(cutoffs, dry_run=True)
    audit_content = sa.or_(tts_events.c.user_id.is_not(None), tts_events.c.text_input.is_not(None))
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(sa.func.count(), sa.func.sum(sa.case((audit_content, 1), else_=0)),
                      sa.func.min(tts_events.c.ts), sa.func.max(tts_events.c.ts)).where(cutoffs.condition())
        ).one()
        result.events, result.audit_events = int(row[0] or 0), int(row[1] or 0)
        result.operations_events = result.events - result.audit_events
        result.oldest, result.newest = row[2], row[3]
        if cutoffs.operations is not None:
            result.rejects = conn.execute(
                sa.select(sa.func.count()).where(tts_rejects.c.created_at < cutoffs.operations)).scalar_one()
    return result


def purge(engine: sa.Engine, dialect: str, cutoffs: Cutoffs, *, batch: int = 5_000,
          progress: Callable[[int], None] | None = None) -> PurgeResult:
    """Delete what :func:`preview` counts, batch by batch; safe to interrupt and run again."""
    result = PurgeResult(cutoffs, dry_run=False)
    started = time.perf_counter()
    _save_horizon(engine, dialect, cutoffs)
    cursor = 0
    options = {"vx_immediate": True} if dialect == "sqlite" else {}
    while True:
        with engine.connect().execution_options(**options) as conn, conn.begin():
            cursor, done = _purge_batch(conn, cutoffs, cursor, batch, result)
        if progress is not None and done:
            progress(done)
        if not done:
            break
        result.batches += 1
    result.rejects = _delete_in_batches(engine, options, tts_rejects, tts_rejects.c.id,
                                        tts_rejects.c.created_at < cutoffs.operations, batch) \
        if cutoffs.operations is not None else 0
    result.sessions = _delete_in_batches(engine, options, web_sessions, web_sessions.c.id_hash,
                                         web_sessions.c.expires_at < utcnow(), batch)
    result.seconds = time.perf_counter() - started
    return result


def _purge_batch(conn: sa.Connection, cutoffs: Cutoffs, cursor: int, batch: int, result: PurgeResult) -> tuple[int, int]:
    rows = conn.execute(
        sa.select(tts_events.c.id, tts_events.c.request_id, tts_events.c.row_hash, tts_events.c.ts,
                  sa.or_(tts_events.c.user_id.is_not(None), tts_events.c.text_input.is_not(None)))
        .where(tts_events.c.id > cursor, cutoffs.condition()).order_by(tts_events.c.id).limit(batch)
    ).all()
    if not rows:
        return cursor, 0
    lo, hi = rows[0][0], rows[-1][0]
    _record_gaps(conn, rows, cutoffs, result)
    deleted = conn.execute(
        sa.delete(tts_events).where(tts_events.c.id >= lo, tts_events.c.id <= hi, cutoffs.condition())
    ).rowcount
    if deleted != len(rows):
        raise RuntimeError(f"purge selected {len(rows)} rows in ids {lo}..{hi} but deleted {deleted}")
    _close_emptied_links(conn, lo, hi, result)
    result.events += deleted
    audit = sum(1 for r in rows if r[4])
    result.audit_events += audit
    result.operations_events += deleted - audit
    oldest, newest = min(r[3] for r in rows), max(r[3] for r in rows)
    result.oldest = oldest if result.oldest is None else min(result.oldest, oldest)
    result.newest = newest if result.newest is None else max(result.newest, newest)
    return hi, deleted


def _record_gaps(conn: sa.Connection, rows: list, cutoffs: Cutoffs, result: PurgeResult) -> None:
    """One gap per run of deleted rows inside a link: rows kept between two deleted ones (newer
    events in the same write) split a run, because verification re-binds the row after a run."""
    lo, hi = rows[0][0], rows[-1][0]
    links = conn.execute(
        sa.select(chain_links.c.seq, chain_links.c.first_id, chain_links.c.last_id)
        .where(chain_links.c.seq > 1, chain_links.c.last_id >= lo, chain_links.c.first_id <= hi)
        .order_by(chain_links.c.seq)
    ).all()
    if not links:
        return  # rows from before the chain began
    kept = sorted(r[0] for r in conn.execute(
        sa.select(tts_events.c.id).where(tts_events.c.id >= lo, tts_events.c.id <= hi, sa.not_(cutoffs.condition()))
    ))
    runs: list[dict] = []
    link_index = 0
    previous_id: int | None = None
    for row_id, request_id, row_hash, _ts, _audit in rows:
        while link_index < len(links) and links[link_index][2] < row_id:
            link_index += 1
        if link_index == len(links) or links[link_index][1] > row_id or row_hash is None:
            previous_id = None
            continue
        seq = links[link_index][0]
        run = runs[-1] if runs else None
        if (run is not None and run["link_seq"] == seq and previous_id is not None
                and not _kept_between(kept, previous_id, row_id)):
            run["last_id"], run["last_request_id"] = row_id, request_id
            run["row_count"] += 1
            run["row_hashes"] += row_hash
        else:
            runs.append({"link_seq": seq, "first_id": row_id, "last_id": row_id, "row_count": 1,
                         "last_request_id": request_id, "row_hashes": row_hash})
        previous_id = row_id
    if runs:
        conn.execute(chain_gaps.insert(), runs)
        result.gaps += len(runs)


def _kept_between(kept: list[int], lo: int, hi: int) -> bool:
    i = bisect.bisect_right(kept, lo)
    return i < len(kept) and kept[i] < hi


def _close_emptied_links(conn: sa.Connection, lo: int, hi: int, result: PurgeResult) -> None:
    """A link with no rows left is marked purged and its gaps dropped: it verifies by itself."""
    links = conn.execute(
        sa.select(chain_links.c.seq, chain_links.c.first_id, chain_links.c.last_id)
        .where(chain_links.c.seq > 1, chain_links.c.last_id >= lo, chain_links.c.first_id <= hi,
               chain_links.c.purged_at.is_(None))
    ).all()
    now = utcnow()
    for seq, first_id, last_id in links:
        left = conn.execute(sa.select(tts_events.c.id).where(
            tts_events.c.id >= first_id, tts_events.c.id <= last_id).limit(1)).first()
        if left is None:
            conn.execute(sa.update(chain_links).where(chain_links.c.seq == seq).values(purged_at=now))
            conn.execute(sa.delete(chain_gaps).where(chain_gaps.c.link_seq == seq))
            result.links_purged += 1


def _delete_in_batches(engine, options, table, id_column, condition, batch: int) -> int:
    total = 0
    while True:
        with engine.connect().execution_options(**options) as conn, conn.begin():
            ids = [r[0] for r in conn.execute(sa.select(id_column).where(condition).order_by(id_column).limit(batch))]
            if not ids:
                return total
            total += conn.execute(sa.delete(table).where(id_column.in_(ids))).rowcount


# --- The horizon: what retention already removed ---------------------------------------------------

def _save_horizon(engine: sa.Engine, dialect: str, cutoffs: Cutoffs) -> None:
    """Remember the newest cutoffs ever applied, before deleting (a write racing the purge then
    already sees them)."""
    with engine.begin() as conn:
        old = load_horizon(conn)
        merged = Cutoffs(_later(old.audit, cutoffs.audit), _later(old.operations, cutoffs.operations))
        state.save(conn, dialect, "retention", {k: v.isoformat() if v else None for k, v in asdict(merged).items()})


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return max(x for x in (a, b) if x is not None) if (a or b) else None


def load_horizon(conn: sa.Connection) -> Cutoffs:
    data = state.load(conn, "retention")
    if data is None:
        return Cutoffs(None, None)
    return Cutoffs(*(datetime.fromisoformat(data[k]) if data.get(k) else None for k in ("audit", "operations")))


@dataclass
class HorizonCache:
    """The horizon as writers see it, re-read at most every ``ttl`` seconds."""

    ttl: float = 30.0
    _value: Cutoffs = field(default_factory=lambda: Cutoffs(None, None))
    _read_at: float = -1e18

    def get(self, engine: sa.Engine) -> Cutoffs:
        now = time.monotonic()
        if now - self._read_at > self.ttl:
            with engine.connect() as conn:
                self._value = load_horizon(conn)
            self._read_at = now
        return self._value

"""Re-encrypt stored events under the active key, in short resumable batches; count values per key.

A pass walks ``tts_events`` by id (``WHERE id > :cursor ORDER BY id LIMIT :batch``). Each batch
is one short transaction that updates only the encrypted columns of the rows that need it and
saves the cursor in ``voxtrail_state`` (name ``reencrypt``): an interruption (Ctrl-C, kill -9,
a lost connection) loses nothing, and the next run continues after the last committed batch.

What a pass changes, per column:

- a column configured for encryption: every value not under the active key, including plaintext
  stored before encryption was turned on;
- a column no longer configured: values still encrypted under an older key move to the active
  key (so the old key can be retired); plaintext stays plaintext.

``row_hash`` is never touched: it covers the plaintext, which re-encryption does not change.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import orjson
import polars as pl
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from voxtrail.keys import ENCRYPTABLE_FIELDS, Keyring
from voxtrail.store import state
from voxtrail.store.schema import tts_events
from voxtrail.transforms.encrypt import PREFIX, decrypt_value, encrypt_series, is_encrypted, key_id_of

STATE_NAME = "reencrypt"
DEFAULT_BATCH = 1000


@dataclass
class ReencryptState:
    """The pass's cursor and counts, saved as JSON with every batch."""

    target: str  # the key id values are moved to
    after_id: int = 0  # every row with id <= after_id is done
    done: bool = False
    rows_scanned: int = 0
    rows_updated: int = 0
    values_encrypted: int = 0  # values newly encrypted or moved to the target key
    max_id: int = 0  # the highest id when the pass (re)started: the progress bar's end

    def as_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()


def load_state(conn: sa.Connection) -> ReencryptState | None:
    data = state.load(conn, STATE_NAME)
    if data is None:
        return None
    return ReencryptState(**{k: v for k, v in data.items() if k in ReencryptState.__dataclass_fields__})


def _save_state(conn: sa.Connection, dialect: str, progress: ReencryptState) -> None:
    state.save(conn, dialect, STATE_NAME, asdict(progress))


def _dialect(engine: sa.Engine) -> str:
    return "mysql" if engine.dialect.name in ("mysql", "mariadb") else engine.dialect.name


def start_state(engine: sa.Engine, target: str, *, resume: bool = True) -> ReencryptState:
    """Continue an unfinished pass to ``target``; otherwise start a new pass from the first row."""
    with engine.connect() as conn:
        old = load_state(conn)
        max_id = conn.execute(sa.select(sa.func.max(tts_events.c.id))).scalar() or 0
    if resume and old is not None and old.target == target and not old.done:
        old.max_id = max(max_id, old.after_id)
        return old
    return ReencryptState(target=target, max_id=max_id)


def reencrypt(
    engine: sa.Engine,
    keyring: Keyring,
    fields: Iterable[str],
    *,
    batch_size: int = DEFAULT_BATCH,
    resume: bool = True,
    pause: float = 0.0,
    on_batch: Callable[[ReencryptState], None] | None = None,
) -> ReencryptState:
    """Run (or continue) a pass to the keyring's active key; returns the final state.

    ``fields`` are the columns configured for encryption; ``pause`` seconds between batches
    leave room to other clients of a busy database. KeyringError / DecryptionError stop the
    pass at the batch that holds the value (committed batches stay done).
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    configured = tuple(fields)
    dialect = _dialect(engine)
    state = start_state(engine, keyring.active_id, resume=resume)
    if on_batch:
        on_batch(state)
    # SQLite: take the write lock up front (store/engine.py), or a batch that read first could
    # not upgrade to writing while voxtrail writes events meanwhile.
    options = {"vx_immediate": True} if dialect == "sqlite" else {}
    while not state.done:
        with engine.connect().execution_options(**options) as conn, conn.begin():
            _run_batch(conn, dialect, keyring, configured, state, batch_size)
        if on_batch:
            on_batch(state)
        if pause and not state.done:
            time.sleep(pause)
    return state


def _run_batch(conn: sa.Connection, dialect: str, keyring: Keyring, configured: tuple[str, ...],
               state: ReencryptState, batch_size: int) -> None:
    c = tts_events.c
    query = (sa.select(c.id, c.request_id, *(c[f] for f in ENCRYPTABLE_FIELDS))
             .where(c.id > state.after_id).order_by(c.id).limit(batch_size))
    rows = conn.execute(query).all()
    if not rows:
        state.done = True
        _save_state(conn, dialect, state)
        return
    changes: dict[int, dict[str, str]] = {}
    for name in ENCRYPTABLE_FIELDS:
        for row_id, value in _new_values(rows, name, name in configured, keyring, state.target):
            changes.setdefault(row_id, {})[name] = value
    _update(conn, changes)
    state.after_id = rows[-1].id
    state.rows_scanned += len(rows)
    state.rows_updated += len(changes)
    state.values_encrypted += sum(len(v) for v in changes.values())
    state.done = len(rows) < batch_size
    _save_state(conn, dialect, state)


def _new_values(rows, name: str, configured: bool, keyring: Keyring, target: str) -> list[tuple[int, str]]:
    """(row id, new stored value) for the values of column ``name`` that must change."""
    picked, plaintexts, request_ids = [], [], []
    for row in rows:
        value = getattr(row, name)
        if value is None:
            continue
        if is_encrypted(value):
            if key_id_of(value) == target:
                continue
            value = decrypt_value(value, keyring, name, row.request_id)
        elif not configured:
            continue
        picked.append(row.id)
        plaintexts.append(value)
        request_ids.append(row.request_id)
    if not picked:
        return []
    sealed = encrypt_series(pl.Series(name, plaintexts, dtype=pl.Utf8), request_ids, keyring, name, kid=target)
    return list(zip(picked, sealed.to_list()))


def _update(conn: sa.Connection, changes: dict[int, dict[str, str]]) -> None:
    """One executemany per set of changed columns (rows usually change the same ones)."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row_id, values in changes.items():
        groups.setdefault(tuple(sorted(values)), []).append({"_id": row_id, **{f"_{k}": v for k, v in values.items()}})
    for columns, params in groups.items():
        stmt = (sa.update(tts_events).where(tts_events.c.id == sa.bindparam("_id"))
                .values({col: sa.bindparam(f"_{col}") for col in columns}))
        conn.execute(stmt, params)


# --- values per key ------------------------------------------------------------------------------

class stored_key_id(FunctionElement):
    """The key id of a ``vx1:<id>:...`` value, in SQL (the text between the first two colons)."""

    type = sa.String()
    inherit_cache = True


@compiles(stored_key_id, "sqlite")
def _key_id_sqlite(element, compiler, **kw):
    x = compiler.process(element.clauses.clauses[0], **kw)
    return f"substr({x}, 5, instr(substr({x}, 5), ':') - 1)"


@compiles(stored_key_id, "postgresql")
def _key_id_pg(element, compiler, **kw):
    return f"split_part({compiler.process(element.clauses.clauses[0], **kw)}, ':', 2)"


@compiles(stored_key_id, "mysql")
@compiles(stored_key_id, "mariadb")
def _key_id_mysql(element, compiler, **kw):
    x = compiler.process(element.clauses.clauses[0], **kw)
    return f"substring_index(substring_index({x}, ':', 2), ':', -1)"


@dataclass
class KeyUsage:
    """Stored values per column: per key id, and how many are plaintext."""

    encrypted: dict[str, dict[str, int]] = field(default_factory=dict)  # column -> key id -> values
    plaintext: dict[str, int] = field(default_factory=dict)  # column -> values

    def values_under(self, kid: str) -> dict[str, int]:
        return {col: per_key[kid] for col, per_key in self.encrypted.items() if per_key.get(kid)}

    def key_ids(self) -> set[str]:
        return {kid for per_key in self.encrypted.values() for kid in per_key}


def key_usage(engine: sa.Engine) -> KeyUsage:
    """Count the values of each encryptable column by key id (one scan per column)."""
    usage = KeyUsage()
    with engine.connect() as conn:
        for name in ENCRYPTABLE_FIELDS:
            col = tts_events.c[name]
            encrypted = sa.func.substr(col, 1, len(PREFIX)) == PREFIX
            # Plaintext counts under ''. Grouped outside a subquery: PostgreSQL would not match
            # the bound parameters of a GROUP BY expression with those of the select list.
            inner = (sa.select(sa.case((encrypted, stored_key_id(col)), else_=sa.literal_column("''")).label("kid"))
                     .where(col.is_not(None)).subquery())
            query = sa.select(inner.c.kid, sa.func.count()).group_by(inner.c.kid)
            per_key = {k: n for k, n in conn.execute(query)}
            usage.plaintext[name] = per_key.pop("", 0)
            usage.encrypted[name] = dict(sorted(per_key.items()))
    return usage

"""The tables, derived from :data:`voxtrail.event.FIELDS` so code and columns cannot drift.

This module describes the *current* schema. Migrations create it step by step; a test compares
the migrated database with this metadata, so a new Field without a migration fails loudly.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from voxtrail.event import FIELDS, Field

#: MySQL table options: DYNAMIC rows allow index keys up to 3072 bytes (request_id VARCHAR(128)
#: in utf8mb4 is 512); the binary collation makes comparisons case- and accent-sensitive as on
#: PostgreSQL and SQLite, so 'abc' and 'ABC' are two request_ids everywhere.
MYSQL_TABLE_KW = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_row_format": "DYNAMIC",
}

metadata = sa.MetaData()


class utc_now(FunctionElement):
    """Current UTC time with microseconds, as a column default, on each dialect."""

    type = sa.DateTime()
    inherit_cache = True


@compiles(utc_now)
def _utc_now_default(element, compiler, **kw):  # pragma: no cover - all dialects are covered below
    return "CURRENT_TIMESTAMP"


@compiles(utc_now, "sqlite")
def _utc_now_sqlite(element, compiler, **kw):
    # %f is milliseconds; padding to six digits keeps the text format SQLAlchemy writes for ts.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


@compiles(utc_now, "postgresql")
def _utc_now_pg(element, compiler, **kw):
    return "timezone('utc', now())"


@compiles(utc_now, "mysql")
@compiles(utc_now, "mariadb")
def _utc_now_mysql(element, compiler, **kw):
    return "CURRENT_TIMESTAMP(6)"  # UTC: every session sets time_zone='+00:00' (engine.py)


def id_type() -> sa.types.TypeEngine:
    # On SQLite only INTEGER PRIMARY KEY is a rowid alias (autoincrementing, no extra index).
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def timestamp_type() -> sa.types.TypeEngine:
    return (
        sa.DateTime()
        .with_variant(postgresql.TIMESTAMP(precision=6), "postgresql")
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    )


def text_type() -> sa.types.TypeEngine:
    # MySQL TEXT stops at 64 KB; texts to synthesise and error messages can be longer.
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def json_type() -> sa.types.TypeEngine:
    # JSONB on PostgreSQL: indexable and queryable with @>, ->> works the same as on JSON.
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def column_type(kind: str, length: int | None = None) -> sa.types.TypeEngine:
    if kind == "string":
        return sa.String(length)
    if kind == "text":
        return text_type()
    if kind in ("int", "id"):
        return sa.BigInteger()
    if kind == "float":
        return sa.Float(53)  # double precision everywhere
    if kind == "timestamp":
        return timestamp_type()
    if kind == "json":
        return json_type()
    raise ValueError(f"unknown field kind {kind!r}")


def field_column(f: Field) -> sa.Column:
    return sa.Column(f.name, column_type(f.kind, f.length), nullable=f.nullable, comment=None)


def event_columns() -> list[sa.Column]:
    return [
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        *(field_column(f) for f in FIELDS),
        sa.Column("ingested_at", timestamp_type(), nullable=False, server_default=utc_now()),
    ]


def reject_columns() -> list[sa.Column]:
    return [
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("source_file", text_type()),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("reason", text_type(), nullable=False),
        sa.Column("excerpt", text_type()),
        sa.Column("created_at", timestamp_type(), nullable=False, server_default=utc_now()),
    ]


def checkpoint_columns() -> list[sa.Column]:
    return [
        sa.Column("stream_id", sa.String(64), primary_key=True),
        sa.Column("fp_len", sa.Integer(), nullable=False),
        sa.Column("fp_hash", sa.String(64), nullable=False),
        sa.Column("path", text_type(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("tail_hash", sa.String(64), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("state", json_type()),
        sa.Column("updated_at", timestamp_type(), nullable=False),
    ]


tts_events = sa.Table(
    "tts_events", metadata, *event_columns(),
    sa.Index("ux_tts_events_request_id", "request_id", unique=True),
    sa.Index("ix_tts_events_ts", "ts"),
    # Ids are write order and never reused (the hash chain's links are id ranges): without
    # AUTOINCREMENT SQLite would hand out again the ids of the newest rows a purge deleted.
    sqlite_autoincrement=True,
    **MYSQL_TABLE_KW,
)

tts_rejects = sa.Table(
    "tts_rejects", metadata, *reject_columns(),
    sa.UniqueConstraint("stream_id", "source_offset", name="ux_tts_rejects_stream_offset"),
    **MYSQL_TABLE_KW,
)

import_checkpoints = sa.Table("import_checkpoints", metadata, *checkpoint_columns(), **MYSQL_TABLE_KW)


# --- People and machines allowed in (migration 0002) ---------------------------------------------
# Secrets are never stored: passwords as Argon2 hashes, API tokens and session ids as SHA-256 of
# high-entropy random values (a KDF adds nothing for a 256-bit secret, and lookups stay indexed).

def user_columns() -> list[sa.Column]:
    return [
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", timestamp_type(), nullable=False, server_default=utc_now()),
        sa.Column("password_changed_at", timestamp_type()),
        sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_failed_login_at", timestamp_type()),
    ]


def api_token_columns() -> list[sa.Column]:
    return [
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(128)),
        sa.Column("created_at", timestamp_type(), nullable=False, server_default=utc_now()),
        sa.Column("last_used_at", timestamp_type()),
        sa.Column("revoked_at", timestamp_type()),
    ]


def web_session_columns() -> list[sa.Column]:
    return [
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", timestamp_type(), nullable=False, server_default=utc_now()),
        sa.Column("expires_at", timestamp_type(), nullable=False),
        # For the idle timeout; refreshed at most once a minute per session (cheap).
        sa.Column("last_seen_at", timestamp_type(), nullable=False, server_default=utc_now()),
    ]


users = sa.Table(
    "voxtrail_users", metadata, *user_columns(),
    sa.UniqueConstraint("name", name="ux_voxtrail_users_name"),
    **MYSQL_TABLE_KW,
)

api_tokens = sa.Table(
    "voxtrail_api_tokens", metadata, *api_token_columns(),
    sa.UniqueConstraint("token_hash", name="ux_voxtrail_api_tokens_hash"),
    **MYSQL_TABLE_KW,
)

web_sessions = sa.Table(
    "voxtrail_sessions", metadata, *web_session_columns(),
    sa.Index("ix_voxtrail_sessions_user", "user_id"),
    **MYSQL_TABLE_KW,
)


# --- Rollups (migration 0003) --------------------------------------------------------------------
# Pre-aggregated counts, sums and latency histograms, maintained by Store.write for exactly the rows
# it inserts (store/rollups.py), so the dashboard never scans tts_events. They are public: Redash
# users may query them (docs/schema.md). Time keys are integers, hours or days since 1970-01-01
# 00:00 UTC: cheap to compare and to shift into a display time zone. A dimension that is NULL in
# tts_events is '' here (a primary key cannot hold NULL).

#: Dimensions of the full cubes, in key order; ``length_bucket`` is seed 000's text-length class.
ROLLUP_DIMENSIONS = ("node", "model", "model_version", "emotion", "emotion_control", "status", "length_bucket")
#: Event fields whose mean the rollups can give: each has a ``<field>_n`` and a ``<field>_sum``.
ROLLUP_MEASURES = (
    "latency_ms", "text_length", "rtf", "audio_length_ms",
    "gpt_gen_ms", "gpt_forward_ms", "s2mel_ms", "bigvgan_ms", "queue_wait_ms",
)
LENGTH_BUCKET_LENGTH = 8
ERROR_MESSAGE_PREFIX = 80


def rollup_dimension_column(name: str) -> sa.Column:
    from voxtrail.event import FIELDS_BY_NAME

    length = LENGTH_BUCKET_LENGTH if name == "length_bucket" else FIELDS_BY_NAME[name].length
    return sa.Column(name, sa.String(length), primary_key=True, server_default="")


def rollup_measure_columns() -> list[sa.Column]:
    columns = [sa.Column("calls", sa.BigInteger(), nullable=False)]
    for name in ROLLUP_MEASURES:
        columns.append(sa.Column(f"{name}_n", sa.BigInteger(), nullable=False))
        columns.append(sa.Column(f"{name}_sum", sa.Float(53), nullable=False))
    return columns


def rollup_table_columns(grain: str, dims: tuple[str, ...], kind: str, key_order: tuple[str, ...] | None = None) -> list:
    """Columns of a rollup table: time key, dimensions, then measures / histogram / error key.

    ``key_order`` reorders the primary key (and so, on SQLite, the rows' storage order)."""
    columns = [sa.Column(grain, sa.BigInteger(), primary_key=True, autoincrement=False)]
    columns += [rollup_dimension_column(d) for d in dims]
    if kind == "measures":
        columns += rollup_measure_columns()
    elif kind == "latency":
        columns += [
            sa.Column("bin", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("calls", sa.BigInteger(), nullable=False),
        ]
    elif kind == "errors":
        columns += [
            sa.Column("error_type", sa.String(256), primary_key=True, server_default=""),
            sa.Column("message_prefix", sa.String(ERROR_MESSAGE_PREFIX), primary_key=True, server_default=""),
            sa.Column("calls", sa.BigInteger(), nullable=False),
        ]
    else:
        raise ValueError(f"unknown rollup kind {kind!r}")
    if key_order is None:
        return columns
    for column in columns:
        if column.primary_key:
            column.primary_key = False
            column.nullable = False
    return [*columns, sa.PrimaryKeyConstraint(*key_order)]


#: name -> (time grain, dimensions, kind). Full cubes answer any filter; the narrower tables
#: answer unfiltered views from a few thousand rows.
GROUP_DIMENSIONS = ("node", "model", "model_version", "emotion", "status")
ERROR_DIMENSIONS = ("node", "model", "model_version", "emotion", "emotion_control", "length_bucket")
ROLLUP_TABLES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "voxtrail_rollup_hourly": ("hour", ROLLUP_DIMENSIONS, "measures"),
    "voxtrail_rollup_daily": ("day", ROLLUP_DIMENSIONS, "measures"),
    "voxtrail_rollup_hourly_groups": ("hour", GROUP_DIMENSIONS, "measures"),
    "voxtrail_rollup_daily_groups": ("day", GROUP_DIMENSIONS, "measures"),
    "voxtrail_rollup_hourly_totals": ("hour", ("status", "length_bucket"), "measures"),
    "voxtrail_rollup_daily_totals": ("day", ("status", "length_bucket"), "measures"),
    "voxtrail_latency_hourly": ("hour", ("node", "model", "model_version", "status"), "latency"),
    "voxtrail_latency_daily": ("day", ("node", "model", "model_version", "status"), "latency"),
    "voxtrail_latency_hourly_node": ("hour", ("node", "status"), "latency"),
    "voxtrail_latency_daily_node": ("day", ("node", "status"), "latency"),
    "voxtrail_latency_hourly_model": ("hour", ("model", "model_version", "status"), "latency"),
    "voxtrail_latency_daily_model": ("day", ("model", "model_version", "status"), "latency"),
    "voxtrail_latency_hourly_totals": ("hour", ("status",), "latency"),
    "voxtrail_latency_daily_totals": ("day", ("status",), "latency"),
    "voxtrail_latency_daily_emotion": ("day", ("node", "model", "model_version", "emotion", "status"), "latency"),
    "voxtrail_errors_hourly": ("hour", ERROR_DIMENSIONS, "errors"),
    "voxtrail_errors_hourly_totals": ("hour", (), "errors"),
}

#: Primary keys that do not start with the time: the columns the dashboard groups by come first,
#: so SQLite aggregates these daily tables in key order instead of sorting (the range filter on
#: ``day`` then reads the whole table: a few thousand rows a day).
ROLLUP_KEY_ORDER: dict[str, tuple[str, ...]] = {
    "voxtrail_rollup_daily_groups": (*GROUP_DIMENSIONS, "day"),
    "voxtrail_latency_daily_totals": ("day", "bin", "status"),
    "voxtrail_latency_hourly_totals": ("hour", "bin", "status"),
    "voxtrail_latency_daily_node": ("node", "bin", "status", "day"),
    "voxtrail_latency_daily_model": ("model", "model_version", "bin", "status", "day"),
}

#: SQLite: WITHOUT ROWID clusters each rollup by its key, so a time range is one contiguous read.
ROLLUP_TABLE_KW = {**MYSQL_TABLE_KW, "sqlite_with_rowid": False}

rollup_tables: dict[str, sa.Table] = {
    name: sa.Table(name, metadata, *rollup_table_columns(*spec, ROLLUP_KEY_ORDER.get(name)), **ROLLUP_TABLE_KW)
    for name, spec in ROLLUP_TABLES.items()
}

#: One row (id = 1): writers on PostgreSQL and MySQL lock it while they insert and roll up, so the
#: rows each write adds are exactly those above the largest id it saw (SQLite's write lock does this).
rollup_state = sa.Table(
    "voxtrail_rollup_state", metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("rebuilt_at", timestamp_type()),
    **MYSQL_TABLE_KW,
)


# --- Trust: the hash chain, retention, access log (migration 0004) --------------------------------
# Each write appends one link: the rows it inserted (an id range), a digest of their row_hash
# values in id order, and the previous link's hash. See store/chain.py and docs/integrity.md.

def chain_link_columns() -> list[sa.Column]:
    return [
        sa.Column("seq", id_type(), primary_key=True, autoincrement=True),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("link_hash", sa.String(64), nullable=False),
        sa.Column("created_at", timestamp_type(), nullable=False, server_default=utc_now()),
        # Set when retention has removed every row of the link: the link itself stays in the chain.
        sa.Column("purged_at", timestamp_type()),
    ]


def chain_gap_columns() -> list[sa.Column]:
    """Rows removed by retention from a link that still has rows: enough to verify the rest."""
    return [
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        sa.Column("link_seq", sa.BigInteger(), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("last_request_id", sa.String(128), nullable=False),
        sa.Column("row_hashes", text_type(), nullable=False),  # hex, concatenated, in id order
        sa.Column("purged_at", timestamp_type(), nullable=False, server_default=utc_now()),
    ]


def state_columns() -> list[sa.Column]:
    return [
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", text_type(), nullable=False),  # JSON text
        sa.Column("updated_at", timestamp_type(), nullable=False, server_default=utc_now()),
    ]


def access_log_columns() -> list[sa.Column]:
    return [
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        sa.Column("at", timestamp_type(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16)),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", text_type()),
        sa.Column("query", text_type()),  # JSON text: what was asked
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("client", sa.String(64)),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
    ]


chain_links = sa.Table(
    "voxtrail_chain", metadata, *chain_link_columns(),
    sa.Index("ix_voxtrail_chain_first_id", "first_id"),
    **MYSQL_TABLE_KW,
)

chain_gaps = sa.Table(
    "voxtrail_chain_gaps", metadata, *chain_gap_columns(),
    sa.Index("ix_voxtrail_chain_gaps_link", "link_seq", "first_id"),
    **MYSQL_TABLE_KW,
)

voxtrail_state = sa.Table("voxtrail_state", metadata, *state_columns(), **MYSQL_TABLE_KW)

access_log = sa.Table(
    "voxtrail_access_log", metadata, *access_log_columns(),
    sa.Index("ix_voxtrail_access_log_at", "at"),
    **MYSQL_TABLE_KW,
)

"""Bring a database to the current schema with Alembic, configured in code (no alembic.ini).

Opening a store migrates on first use. The common case, a database already at head, costs one
small query; otherwise a per-database lock makes concurrent first opens (two importers started
together) run the migration once instead of racing to CREATE TABLE.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa

#: The newest revision in migrations/versions (a test checks it against Alembic's own view).
#: Knowing it without loading Alembic keeps the common case, a database already at head,
#: free of Alembic's import cost on every command.
HEAD = "0004"

SCRIPT_LOCATION = Path(__file__).with_name("migrations")
_LOCK_NAME = "voxtrail_migrate"
_PG_LOCK_KEY = 0x766F7874  # "voxt": any constant shared by all voxtrail processes


def alembic_config(connection: sa.Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    # ConfigParser interpolates '%', which a checkout path may contain.
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: sa.Connection) -> str | None:
    """The database's revision, read without Alembic (None before the first migration)."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def migrate(engine: sa.Engine, dialect: str) -> bool:
    """Upgrade to head if needed; True when migrations ran."""
    head = HEAD
    with engine.connect() as conn:
        at = current_revision(conn)
        conn.rollback()
    if at == head:
        return False
    options = {"vx_immediate": True} if dialect == "sqlite" else {}
    with engine.connect().execution_options(**options) as conn:
        if dialect == "mysql":
            # DDL commits implicitly on MySQL, so the lock must be a session lock.
            got = conn.exec_driver_sql(f"SELECT GET_LOCK('{_LOCK_NAME}', 300)").scalar()
            if got != 1:
                raise RuntimeError("timed out waiting for another process to finish migrating")
            conn.commit()
        try:
            with conn.begin():
                if dialect == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
                # SQLite: BEGIN IMMEDIATE (vx_immediate) is the lock.
                if current_revision(conn) == head:  # another process did it while we waited
                    return False
                from alembic import command

                command.upgrade(alembic_config(conn), "head")
        finally:
            if dialect == "mysql":
                conn.exec_driver_sql(f"SELECT RELEASE_LOCK('{_LOCK_NAME}')")
                conn.commit()
    return True

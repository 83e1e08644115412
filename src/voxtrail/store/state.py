"""Small named state rows (``voxtrail_state``): JSON values that survive restarts.

``chain`` (the database's id for checkpoints), ``retention`` (the horizon purges reached) and
``reencrypt`` (a key rotation's cursor). Saved inside the caller's transaction, so a value moves
together with the work it describes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from voxtrail.store.schema import voxtrail_state

_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert, "mysql": mysql.insert}


def load(conn: sa.Connection, name: str) -> Any | None:
    value = conn.execute(sa.select(voxtrail_state.c.value).where(voxtrail_state.c.name == name)).scalar()
    return None if value is None else orjson.loads(value)


def save(conn: sa.Connection, dialect: str, name: str, value: Any) -> None:
    text = orjson.dumps(value).decode()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    stmt = _INSERTS[dialect](voxtrail_state).values(name=name, value=text, updated_at=now)
    changes = {"value": text, "updated_at": now}
    if dialect == "mysql":
        stmt = stmt.on_duplicate_key_update(**changes)
    else:
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_=changes)
    conn.execute(stmt)

"""Shared pieces of the recorder tests: counting rows, a locked table, a database that refuses
rows, a port with nothing listening."""

from __future__ import annotations

import socket

import sqlalchemy as sa

from voxtrail.store.engine import make_engine, normalize_url


def rows(url: str, sql: str = "SELECT COUNT(*) FROM tts_events"):
    u, dialect = normalize_url(url)
    engine = make_engine(u, dialect)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(sql))
            return result.scalar_one() if "COUNT(" in sql.upper() else result.all()
    finally:
        engine.dispose()


def request_ids(url: str) -> list[str]:
    return [r[0] for r in rows(url, "SELECT request_id FROM tts_events")]


def lock_events_table(url: str):
    """Another session holds a lock that stops every write to tts_events; returns its release()."""
    from voxtrail.store import Store

    store = Store.open(url)  # create the schema first
    conn = store.engine.connect()
    if store.dialect == "sqlite":
        conn = conn.execution_options(vx_immediate=True)
        conn.begin()  # BEGIN IMMEDIATE: the write lock
    elif store.dialect == "postgresql":
        conn.begin()
        conn.exec_driver_sql("LOCK TABLE tts_events IN ACCESS EXCLUSIVE MODE")
    else:
        conn.exec_driver_sql("LOCK TABLES tts_events WRITE")

    def release():
        if store.dialect == "mysql":
            conn.exec_driver_sql("UNLOCK TABLES")
        else:
            conn.rollback()
        conn.close()
        store.close()
    return release


def refuse_in_database(url: str, request_ids: list[str], *, outage: bool = False) -> None:
    """A trigger that makes the database refuse rows with these request_ids: for a constraint
    (a data error: SQLSTATE 23514, MySQL 1264, SQLite's RAISE) or, with ``outage``, as a failure
    that is not about the values (SQLSTATE 58030, MySQL 1644, an SQLite error that is not a constraint)."""
    from voxtrail.store import Store

    with Store.open(url) as store:  # creates the schema
        ids = ", ".join(f"'{rid}'" for rid in request_ids)
        with store.engine.begin() as conn:
            if store.dialect == "sqlite":
                body = "SELECT no_such_function();" if outage else "SELECT RAISE(ABORT, 'poison row refused');"
                conn.exec_driver_sql(f"CREATE TRIGGER vx_refuse BEFORE INSERT ON tts_events "
                                     f"WHEN NEW.request_id IN ({ids}) BEGIN {body} END")
            elif store.dialect == "postgresql":
                code = "58030" if outage else "23514"
                conn.exec_driver_sql(
                    f"CREATE FUNCTION vx_refuse() RETURNS trigger AS $$ BEGIN IF NEW.request_id IN ({ids}) THEN "
                    f"RAISE EXCEPTION 'poison row refused' USING ERRCODE = '{code}'; END IF; RETURN NEW; END $$ "
                    "LANGUAGE plpgsql")
                conn.exec_driver_sql("CREATE TRIGGER vx_refuse BEFORE INSERT ON tts_events FOR EACH ROW "
                                     "EXECUTE FUNCTION vx_refuse()")
            else:
                signal = ("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poison row refused'" if outage else
                          "SIGNAL SQLSTATE '22003' SET MYSQL_ERRNO = 1264, MESSAGE_TEXT = 'poison row refused'")
                conn.exec_driver_sql(f"CREATE TRIGGER vx_refuse BEFORE INSERT ON tts_events FOR EACH ROW "
                                     f"BEGIN IF NEW.request_id IN ({ids}) THEN {signal}; END IF; END")


def dead_port() -> int:
    """A local TCP port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float = 30.0) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` passes (False): no fixed sleeps in tests
    on a loaded machine."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())

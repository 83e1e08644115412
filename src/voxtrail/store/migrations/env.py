"""Alembic environment: runs on the connection voxtrail hands over, or on ``sqlalchemy.url``.

``Store.open`` passes its own connection in ``config.attributes["connection"]`` so migrations use
the same engine settings (drivers, pragmas, session time zone) as the rest of the store. The
URL fallback is for running ``alembic`` by hand against a database.
"""

from alembic import context

from voxtrail.store.schema import metadata

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, version_table="alembic_version")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from voxtrail.store.engine import make_engine, normalize_url

    url, dialect = normalize_url(config.get_main_option("sqlalchemy.url"))
    engine = make_engine(url, dialect)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("voxtrail migrations run online only (Store.open applies them)")
run_migrations_online()

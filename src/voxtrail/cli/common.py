"""Options and set-up shared by the commands: the same flags mean the same thing everywhere."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import click

from voxtrail import config
from voxtrail.cli.output import fail
from voxtrail.cli.params import DatabaseUrl, LocalPath, Zone
from voxtrail.keys import KeyringError
from voxtrail.store import Store, StoreError
from voxtrail.transforms.mask import check_settings as check_mask_settings

FORMATS = ["auto", "text", "jsonl", "audit", "indextts"]

db_option = click.option(
    "--db", metavar="URL", type=DatabaseUrl(),
    help="Database as a SQLAlchemy URL: sqlite:///voxtrail.db (default), postgresql://user@host/db, "
         "mysql://user@host/db. Env: VOXTRAIL_DB.",
)
config_option = click.option(
    "--config", "config_file", metavar="PATH", type=LocalPath(),
    help="TOML file with settings (db, tz). Env: VOXTRAIL_CONFIG. Default: ./voxtrail.toml if present.",
)
tz_option = click.option(
    "--tz", metavar="ZONE", type=Zone(),
    help="Time zone of timestamps that carry none (IANA name, e.g. Asia/Shanghai). Default: the machine's. "
         "Env: VOXTRAIL_TZ.",
)
format_option = click.option(
    "--format", "-f", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
    help="Log format; auto detects text, jsonl, audit and indextts from the file's first lines.",
)


def db_options(command):
    """--db and --config, for commands that only need the database."""
    return db_option(config_option(command))


def import_options(command):
    """--db, --format, --tz and --config, for commands that read logs."""
    return db_option(format_option(tz_option(config_option(command))))


@contextmanager
def opened_store(db: str | None, tz: str | None, config_file: str | None,
                 pool_timeout: float | None = None) -> Iterator[tuple[Store, config.Settings]]:
    """Resolve settings and open the store; a user's mistake ends in one line, not a traceback.
    ``pool_timeout``: see :func:`voxtrail.store.engine.make_engine`."""
    try:
        settings = config.load(db=db, tz=tz, config_file=config_file)
        check_mask_settings(settings)  # a bad [mask] table stops the command here, not mid-import
        store = Store.open(settings.db, settings=settings, pool_timeout=pool_timeout)
    except (config.ConfigError, StoreError) as exc:
        fail(str(exc))
    try:
        yield store, settings
    except (StoreError, KeyringError, config.ConfigError) as exc:  # keys and their settings are read when needed
        fail(str(exc))
    finally:
        store.close()

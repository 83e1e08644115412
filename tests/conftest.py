"""Shared database fixtures: a fresh, empty database per test on each dialect.

Server databases are reached through an admin URL (override with VOXTRAIL_TEST_POSTGRESQL_URL /
VOXTRAIL_TEST_MYSQL_URL). When a server is unreachable the test is skipped with the reason,
except on CI (env CI set), where every test must run, so it fails instead.
"""

from __future__ import annotations

import os
import uuid
from typing import Callable

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

# Property-based tests: a bounded budget everywhere (CI included), more with
# HYPOTHESIS_PROFILE=deep for a local hunt. No deadline: the machine is shared and noisy, and a
# slow example is a benchmark's concern, not a property's. Examples that talk to a database
# are few and fixtures are function-scoped on purpose (each example gets fresh state itself).
settings.register_profile("default", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("deep", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

DIALECTS = ("sqlite", "postgresql", "mysql")

_ADMIN_URLS = {
    "postgresql": [
        os.environ.get("VOXTRAIL_TEST_POSTGRESQL_URL"),
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg://root@127.0.0.1:5432/test",
    ],
    "mysql": [
        os.environ.get("VOXTRAIL_TEST_MYSQL_URL"),
        "mysql+pymysql://root@127.0.0.1:3306/test",
    ],
}

_admins: dict[str, sa.Engine | str] = {}  # dialect -> admin engine, or why it is unavailable


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: database tests must not be skipped)")
    pytest.skip(reason)


def _admin(dialect: str) -> sa.Engine:
    if dialect not in _admins:
        errors = []
        for url in filter(None, _ADMIN_URLS[dialect]):
            engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
            except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
                errors.append(f"{engine.url.render_as_string(hide_password=True)}: {str(exc).splitlines()[0]}")
                continue
            _admins[dialect] = engine
            break
        else:
            _admins[dialect] = f"{dialect} server unreachable ({'; '.join(errors)})"
    admin = _admins[dialect]
    if isinstance(admin, str):
        _unavailable(admin)
    return admin


def _databases(directory):
    """A factory of fresh empty databases (see fresh_db_url) and the function dropping them."""
    created: list[tuple[sa.Engine, str, str]] = []

    def make(dialect: str) -> str:
        if dialect == "sqlite":
            return f"sqlite:///{directory / f'vx_{uuid.uuid4().hex[:8]}.db'}"
        admin = _admin(dialect)
        name = f"vx_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        created.append((admin, dialect, name))
        url = admin.url.set(database=name)
        url = url.set(drivername=dialect)
        return url.render_as_string(hide_password=False)

    def drop() -> None:
        for admin, dialect, name in created:
            with admin.connect() as conn:
                force = " WITH (FORCE)" if dialect == "postgresql" else ""
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")

    return make, drop


@pytest.fixture
def fresh_db_url(tmp_path) -> Callable[[str], str]:
    """Factory: ``fresh_db_url("postgresql")`` -> URL of a new empty database, dropped after the test.

    URLs are plain (``postgresql://``, ``mysql://``) as a user would write them.
    """
    make, drop = _databases(tmp_path)
    yield make
    drop()


@pytest.fixture(scope="module")
def module_db_url(tmp_path_factory) -> Callable[[str], str]:
    """The same for a whole test module (property tests whose examples share one database)."""
    make, drop = _databases(tmp_path_factory.mktemp("module_db"))
    yield make
    drop()


@pytest.fixture(params=DIALECTS)
def db_url(request, fresh_db_url) -> str:
    """A fresh empty database on each of SQLite, PostgreSQL and MySQL/MariaDB."""
    return fresh_db_url(request.param)


@pytest.fixture
def sqlite_url(fresh_db_url) -> str:
    """A fresh SQLite database file (fast; for tests that do not depend on the dialect)."""
    return fresh_db_url("sqlite")


@pytest.fixture(autouse=True)
def isolated_keys(tmp_path_factory, monkeypatch) -> None:
    """Each test has its own key file location (a Store creates its default key file on first
    need, under $XDG_CONFIG_HOME) and no keys or trust settings from the developer's shell."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    for name in ("VOXTRAIL_KEYS", "VOXTRAIL_KEY_FILE", "VOXTRAIL_ENCRYPT_FIELDS", "VOXTRAIL_MASK",
                 "VOXTRAIL_RETENTION_AUDIT", "VOXTRAIL_RETENTION_OPERATIONS", "VOXTRAIL_CONFIG"):
        monkeypatch.delenv(name, raising=False)

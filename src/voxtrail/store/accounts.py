"""Who may come in: users (passwords), API tokens and web sessions, on every dialect.

All SQL about people and machines lives here; the CLI (``voxtrail user``, ``voxtrail token``)
and the web app call these functions. Secrets never reach the database: passwords are stored
as Argon2id hashes (argon2-cffi's defaults, re-hashed at the next login when those change),
API tokens and session ids as the SHA-256 of 32 random bytes (a slow KDF adds nothing for a
256-bit secret and would make every API call slow; an indexed hash lookup stays cheap).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from voxtrail.store.schema import api_tokens, users, web_sessions

ROLES = ("viewer", "auditor", "admin")  # each sees what the one before sees, and more
SCOPES = ("ingest", "read")
TOKEN_PREFIX = "vxt_"
MIN_PASSWORD_LENGTH = 8
#: How often last_used_at / last_seen_at are written at most: one UPDATE a minute, not per request.
TOUCH_INTERVAL = timedelta(seconds=60)

MAX_NAME_LENGTH = 128
_NAME = re.compile(r"[\w.@+-]{1,%d}" % MAX_NAME_LENGTH)  # fullmatch: "$" would also match before a final newline
_hasher = PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Verified against when a login names no existing user, so both cases take the same time."""
    return _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """A request about accounts that cannot be done; ``str()`` says why, in one line."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def role_rank(role: str) -> int:
    return ROLES.index(role)


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def shown_name(name: object, limit: int = 40) -> str:
    """``name`` for an error message: quoted, control characters escaped, at most ``limit`` long."""
    text = name if isinstance(name, str) else str(name)
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def check_name(name: str, what: str = "user name") -> str:
    """``name`` if it is a valid user or token name, else an AccountError saying why.

    Names are compared exactly (byte for byte) everywhere, so a valid name has one spelling:
    no spaces or control characters (MySQL's PAD SPACE collations would make ``"alice "`` equal
    ``"alice"``), and no compatibility forms such as full-width letters (``"ａｌｉｃｅ"``).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AccountError(f"invalid {what} {shown_name(name)}: use 1-{MAX_NAME_LENGTH} letters, digits or . _ @ + -")
    plain = unicodedata.normalize("NFKC", name)
    if plain != name:
        raise AccountError(f"invalid {what} {shown_name(name)}: write it as {shown_name(plain)} "
                           "(no full-width or other compatibility characters)")
    return name


def is_valid_name(name: str) -> bool:
    try:
        check_name(name)
    except AccountError:
        return False
    return True


def name_key(name: str) -> str:
    """The form in which two names look the same to a person: compatibility forms folded
    (NFKC) and case folded. No two users share one (``add_user`` refuses the second), and the
    login throttle counts failures per key, so ``Admin`` and ``ＡＤＭＩＮ`` wait with ``admin``."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    return role


def hash_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


# --- users ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    created_at: datetime | None = None
    password_changed_at: datetime | None = None
    failed_logins: int = 0
    last_failed_login_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_USER_COLUMNS = (users.c.id, users.c.name, users.c.role, users.c.created_at, users.c.password_changed_at,
                 users.c.failed_logins, users.c.last_failed_login_at)


def _user(row) -> User:
    return User(*row)


def count_users(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()


def list_users(engine: sa.Engine) -> list[User]:
    with engine.connect() as conn:
        return [_user(r) for r in conn.execute(sa.select(*_USER_COLUMNS).order_by(users.c.name))]


def get_user(engine: sa.Engine, name: str) -> User | None:
    """The user with exactly this name (None for an invalid name: no such user can exist)."""
    if not is_valid_name(name):
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.select(*_USER_COLUMNS).where(users.c.name == name)).first()
    return _user(row) if row else None


def add_user(engine: sa.Engine, name: str, role: str, password: str) -> User:
    check_name(name)
    check_role(role)
    hashed = hash_password(password)
    now = utcnow()
    key = name_key(name)
    try:
        with engine.begin() as conn:
            for existing in conn.execute(sa.select(users.c.name)).scalars():
                if name_key(existing) == key:
                    raise AccountError(
                        f"user {shown_name(existing)} already exists" if existing == name else
                        f"user name {shown_name(name)} is too like the existing user {shown_name(existing)} "
                        "(names that differ only in case or width would be confused): choose another")
            conn.execute(users.insert().values(name=name, role=role, password_hash=hashed, created_at=now,
                                               password_changed_at=now, failed_logins=0))
    except sa.exc.IntegrityError:
        raise AccountError(f"user {shown_name(name)} already exists") from None
    user = get_user(engine, name)
    assert user is not None
    return user


def _require(conn: sa.Connection, name: str) -> int:
    check_name(name)
    user_id = conn.execute(sa.select(users.c.id).where(users.c.name == name)).scalar()
    if user_id is None:
        raise AccountError(f"no user named {shown_name(name)} (see 'voxtrail user list')")
    return user_id


def remove_user(engine: sa.Engine, name: str) -> None:
    """Delete the user and end every session of theirs, in one transaction."""
    with engine.begin() as conn:
        user_id = _require(conn, name)
        conn.execute(web_sessions.delete().where(web_sessions.c.user_id == user_id))
        conn.execute(users.delete().where(users.c.id == user_id))


def set_password(engine: sa.Engine, name: str, password: str) -> None:
    """Change the password and end the user's sessions (whoever had it must log in again)."""
    hashed = hash_password(password)
    with engine.begin() as conn:
        user_id = _require(conn, name)
        conn.execute(users.update().where(users.c.id == user_id).values(
            password_hash=hashed, password_changed_at=utcnow(), failed_logins=0))
        conn.execute(web_sessions.delete().where(web_sessions.c.user_id == user_id))


def set_role(engine: sa.Engine, name: str, role: str) -> None:
    check_role(role)
    with engine.begin() as conn:
        user_id = _require(conn, name)
        conn.execute(users.update().where(users.c.id == user_id).values(role=role))


def authenticate(engine: sa.Engine, name: str, password: str) -> User | None:
    """The user if the password is right, else None (whether or not the user exists).

    A right password whose hash uses older Argon2 parameters is re-hashed on the spot. An
    invalid name is looked up nowhere (no user can have it) but costs the same time.
    """
    row = None
    if is_valid_name(name):
        with engine.connect() as conn:
            row = conn.execute(sa.select(users.c.id, users.c.password_hash).where(users.c.name == name)).first()
    stored = row.password_hash if row else _dummy_hash()
    try:
        _hasher.verify(stored, password)
        ok = row is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if row is None:
        return None
    with engine.begin() as conn:
        if not ok:
            conn.execute(users.update().where(users.c.id == row.id).values(
                failed_logins=users.c.failed_logins + 1, last_failed_login_at=utcnow()))
            return None
        values: dict[str, Any] = {"failed_logins": 0}
        if _hasher.check_needs_rehash(stored):
            values["password_hash"] = _hasher.hash(password)
        conn.execute(users.update().where(users.c.id == row.id).values(**values))
    return get_user(engine, name)


def recorded_failures(engine: sa.Engine, name: str) -> tuple[int, datetime | None] | None:
    """(failed logins since the last success, when the last was) of user ``name``, or None when
    there is no such user: the login throttle's lock for real accounts, which survives restarts
    and cannot be pushed out of memory."""
    if not is_valid_name(name):
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.select(users.c.failed_logins, users.c.last_failed_login_at)
                           .where(users.c.name == name)).first()
    return (row.failed_logins or 0, row.last_failed_login_at) if row else None


# --- API tokens ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    id: int
    name: str
    prefix: str
    scope: str
    created_by: str | None
    created_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}


_TOKEN_COLUMNS = (api_tokens.c.id, api_tokens.c.name, api_tokens.c.prefix, api_tokens.c.scope,
                  api_tokens.c.created_by, api_tokens.c.created_at, api_tokens.c.last_used_at,
                  api_tokens.c.revoked_at)


def create_token(engine: sa.Engine, name: str, scope: str = "ingest", created_by: str | None = None
                 ) -> tuple[Token, str]:
    """A new token and its secret, which is shown once and never stored."""
    check_name(name, "token name")
    if scope not in SCOPES:
        raise AccountError(f"unknown scope {scope!r}: expected one of {', '.join(SCOPES)}")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        taken = conn.execute(sa.select(api_tokens.c.id).where(
            api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))).first()
        if taken:
            raise AccountError(f"an active token named {name!r} exists: revoke it first or choose another name")
        token_id = conn.execute(api_tokens.insert().values(
            name=name, token_hash=sha256_hex(secret), prefix=secret[:8], scope=scope, created_by=created_by,
            created_at=utcnow())).inserted_primary_key[0]
        row = conn.execute(sa.select(*_TOKEN_COLUMNS).where(api_tokens.c.id == token_id)).one()
    return Token(*row), secret


def list_tokens(engine: sa.Engine) -> list[Token]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*_TOKEN_COLUMNS).order_by(api_tokens.c.id))
        return [Token(*r) for r in rows]


def revoke_token(engine: sa.Engine, name_or_id: str | int) -> Token:
    """Revoke the token with this id (an int), or the active token with this name (a str), or
    failing that the token whose id the str spells."""
    with engine.begin() as conn:
        query = sa.select(*_TOKEN_COLUMNS)
        row = None
        if isinstance(name_or_id, str) and is_valid_name(name_or_id):
            row = conn.execute(query.where(api_tokens.c.name == name_or_id,
                                           api_tokens.c.revoked_at.is_(None))).first()
        # ASCII digits that fit a BIGINT ('²'.isdigit() is true, and int() cannot read it).
        if row is None and re.fullmatch(r"[0-9]{1,18}", str(name_or_id)):
            row = conn.execute(query.where(api_tokens.c.id == int(name_or_id))).first()
        if row is None:
            raise AccountError(f"no active token named {shown_name(name_or_id)} (see 'voxtrail token list')")
        token = Token(*row)
        if token.revoked_at is not None:
            raise AccountError(f"token {token.id} ({token.name}) is already revoked")
        conn.execute(api_tokens.update().where(api_tokens.c.id == token.id).values(revoked_at=utcnow()))
    return token


def verify_token(engine: sa.Engine, secret: str) -> Token | None:
    """The active token with this secret, or None. Records its use at most once a minute."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.select(*_TOKEN_COLUMNS).where(api_tokens.c.token_hash == sha256_hex(secret))).first()
    if row is None:
        return None
    token = Token(*row)
    if not token.active:
        return None
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at >= TOUCH_INTERVAL:
        with engine.begin() as conn:
            conn.execute(api_tokens.update().where(api_tokens.c.id == token.id).values(last_used_at=now))
    return token


# --- web sessions --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    expires_at: datetime


def create_session(engine: sa.Engine, user_id: int, lifetime: timedelta) -> tuple[str, Session]:
    """A new session: (the secret id for the cookie, the session). Only its hash is stored."""
    raw = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(web_sessions.insert().values(id_hash=sha256_hex(raw), user_id=user_id, csrf_token=csrf,
                                                  created_at=now, expires_at=now + lifetime, last_seen_at=now))
        row = conn.execute(sa.select(*_USER_COLUMNS).where(users.c.id == user_id)).one()
    return raw, Session(_user(row), csrf, now + lifetime)


def load_session(engine: sa.Engine, raw: str, idle_timeout: timedelta) -> Session | None:
    """The live session with this cookie value, or None when unknown, expired or idle too long."""
    id_hash = sha256_hex(raw)
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(web_sessions.c.csrf_token, web_sessions.c.expires_at, web_sessions.c.last_seen_at,
                      *_USER_COLUMNS)
            .join(users, users.c.id == web_sessions.c.user_id)
            .where(web_sessions.c.id_hash == id_hash)
        ).first()
    if row is None:
        return None
    now = utcnow()
    if now >= row.expires_at or now - row.last_seen_at >= idle_timeout:
        delete_session(engine, raw)
        return None
    if now - row.last_seen_at >= TOUCH_INTERVAL:
        with engine.begin() as conn:
            conn.execute(web_sessions.update().where(web_sessions.c.id_hash == id_hash).values(last_seen_at=now))
    return Session(_user(row[3:]), row.csrf_token, row.expires_at)


def delete_session(engine: sa.Engine, raw: str) -> None:
    with engine.begin() as conn:
        conn.execute(web_sessions.delete().where(web_sessions.c.id_hash == sha256_hex(raw)))


def purge_sessions(engine: sa.Engine, idle_timeout: timedelta) -> int:
    """Delete expired and idle sessions; returns how many."""
    now = utcnow()
    with engine.begin() as conn:
        result = conn.execute(web_sessions.delete().where(
            sa.or_(web_sessions.c.expires_at <= now, web_sessions.c.last_seen_at <= now - idle_timeout)))
    return result.rowcount


def count_sessions(engine: sa.Engine, user_name: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(web_sessions)
    if user_name is not None:
        query = query.join(users, users.c.id == web_sessions.c.user_id).where(users.c.name == user_name)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()

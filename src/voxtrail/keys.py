"""Encryption keys: where they come from, the key file, and which fields they protect.

Keys never live in the database. They come from, first match:

1. ``VOXTRAIL_KEYS``: ``id:base64key[,id:base64key...]``, the last one active;
2. the key file: ``--key-file``, else ``$VOXTRAIL_KEY_FILE``, else ``[keys] file`` in the TOML
   config, else ``$XDG_CONFIG_HOME/voxtrail/keys`` (``~/.config/voxtrail/keys``). One
   ``id:base64key`` per line, ``#`` comments, the last key active. Like ssh with private keys,
   a key file that group or others can read is refused, and so is one that belongs to another
   user or lies in a directory another user could write to (whoever can replace the key file
   chooses the key new events are encrypted with).

A :class:`Keyring` built from a file re-reads it when its modification time changes (checked at
most once a second), so a long-running ``voxtrail serve`` or Recorder picks up a rotated key.

Key bytes appear in no message, log or repr: errors name key ids and places only.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from voxtrail import localfs
from voxtrail.config import ConfigError, Settings, pick, text_value

log = logging.getLogger(__name__)

KEY_BYTES = 32  # AES-256
ENV_KEYS = "VOXTRAIL_KEYS"
ENV_KEY_FILE = "VOXTRAIL_KEY_FILE"
ENV_FIELDS = "VOXTRAIL_ENCRYPT_FIELDS"
ENCRYPTABLE_FIELDS = ("ref_audio_url", "text_input", "output_audio_url")
DEFAULT_FIELDS = ("ref_audio_url",)
#: How often a file-backed keyring looks at the file's modification time.
RELOAD_CHECK_SECONDS = 1.0

_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_warned: set[str] = set()
_warned_lock = threading.Lock()


class KeyringError(Exception):
    """Keys are missing, unreadable or malformed; the message says what to do (and holds no key)."""


def _warn_once(tag: str, message: str, *args) -> None:
    with _warned_lock:
        if tag in _warned:
            return
        _warned.add(tag)
    log.warning(message, *args)


# --- key material ------------------------------------------------------------------------------

def new_key_id() -> str:
    return "k" + secrets.token_hex(4)


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def format_key_line(kid: str, key: bytes) -> str:
    return f"{kid}:{base64.b64encode(key).decode()}"


def _parse_entry(text: str, where: str) -> tuple[str, bytes]:
    """``id:base64key`` -> (id, 32 bytes). ``where`` locates the entry in errors (never the key)."""
    kid, sep, encoded = text.strip().partition(":")
    kid = kid.strip()
    if not sep or not _KEY_ID.fullmatch(kid):
        raise KeyringError(f"{where}: expected 'id:base64key' with an id of letters, digits, '.', '_' or '-'")
    encoded = encoded.strip().replace("-", "+").replace("_", "/")  # URL-safe base64 too
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{where}: the key of {kid!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyringError(f"{where}: the key of {kid!r} is {len(key)} bytes, AES-256 needs {KEY_BYTES}")
    return kid, key


def _collect(entries: Iterable[tuple[str, bytes]], source: str) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for kid, key in entries:
        if kid in keys:
            raise KeyringError(f"{source}: key id {kid!r} appears twice; each id must name one key")
        keys[kid] = key
    if not keys:
        raise KeyringError(f"{source} holds no key: add a line 'id:base64key' (voxtrail keys generate prints one)")
    return keys


def parse_env_keys(value: str) -> dict[str, bytes]:
    entries = [p for p in value.split(",") if p.strip()]
    return _collect((_parse_entry(p, f"{ENV_KEYS} entry {i}") for i, p in enumerate(entries, 1)), ENV_KEYS)


def parse_key_file_text(text: str, path: Path) -> dict[str, bytes]:
    def entries():
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield _parse_entry(line, f"key file {path} line {number}")
    return _collect(entries(), f"key file {path}")


# --- the key file ------------------------------------------------------------------------------

def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "voxtrail" / "keys"


def key_file_path(settings: Settings | None, key_file: str | os.PathLike | None = None) -> Path:
    """``--key-file`` > ``$VOXTRAIL_KEY_FILE`` > ``[keys] file`` > the XDG default."""
    try:
        section = settings.section("keys") if settings is not None else {}
        where = settings.where("file", "keys") if settings is not None else "[keys] file"
        chosen, origin = pick(None if key_file is None else os.fspath(key_file), "--key-file", ENV_KEY_FILE,
                              section, "file", where)
        if chosen is None:
            return default_key_file()
        return Path(text_value(chosen, origin)).expanduser()
    except ConfigError as exc:
        raise KeyringError(str(exc)) from None


def check_permissions(path: Path, st: os.stat_result) -> None:
    """The key file must be this user's (or root's), readable by nobody else, and in directories
    nobody else can write to (ssh's StrictModes): whoever can write or replace it chooses the
    key new events are encrypted with."""
    if os.name != "posix":
        return
    if not localfs.trusted_uid(st.st_uid):
        raise KeyringError(
            f"key file {path} belongs to {localfs.who(st.st_uid)}, not to {localfs.who(os.geteuid())} who runs "
            f"voxtrail: if you trust its keys, run 'chown {localfs.user_name(os.geteuid())} {path}'; otherwise "
            f"make a key file of your own"
        )
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise KeyringError(
            f"key file {path} is accessible by group or others (mode {mode:04o}): "
            f"run 'chmod 600 {path}' (voxtrail refuses keys others could read)"
        )
    _check_parents(path)


def _check_parents(path: Path) -> None:
    try:
        localfs.check_parents(path, "key file")
    except localfs.UntrustedPath as exc:
        raise KeyringError(str(exc)) from None


def read_key_file(path: Path) -> tuple[dict[str, bytes], os.stat_result]:
    try:
        data, st = localfs.read_small_file(path, "key file")
    except localfs.MissingFile as exc:
        raise KeyringError(f"{exc}: create it with 'voxtrail keys init'") from None
    except localfs.LocalFileError as exc:
        raise KeyringError(str(exc)) from None
    check_permissions(path, st)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyringError(f"cannot read key file {path}: it is not UTF-8 text") from None
    return parse_key_file_text(text, path), st


def write_key_file(path: Path, text: str, *, replace: bool) -> None:
    """Write the whole file atomically, 0600 from the first byte, in a 0700 directory.

    ``replace=False`` fails with FileExistsError rather than overwrite (os.link is atomic), so
    two processes creating the default key file at once end with one key, not two.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_parents(path)  # never write keys where another user could swap the file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def create_key_file(path: Path) -> str:
    """A new key file with one fresh key; returns its id. FileExistsError if the file exists."""
    kid = new_key_id()
    header = ("# voxtrail encryption keys: one 'id:base64key' per line, the last one is active.\n"
              "# Back this file up: without it, encrypted fields cannot be read.\n")
    write_key_file(path, header + format_key_line(kid, new_key()) + "\n", replace=False)
    return kid


def append_key(path: Path, kid: str, key: bytes) -> None:
    """Add a key as the file's last line, which makes it the active key."""
    keys, _ = read_key_file(path)
    if kid in keys:
        raise KeyringError(f"key file {path} already has a key {kid!r}")
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text += "\n"
    write_key_file(path, text + format_key_line(kid, key) + "\n", replace=True)


def remove_key(path: Path, kid: str) -> None:
    """Drop a key's line (comments and the other keys stay as they are)."""
    keys, _ = read_key_file(path)
    if kid not in keys:
        raise KeyringError(f"key file {path} has no key {kid!r} (it has: {', '.join(keys)})")
    if list(keys)[-1] == kid:
        raise KeyringError(f"{kid!r} is the active key of {path}: rotate to a new key before retiring it")
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip().startswith("#") or line.split(":", 1)[0].strip() != kid]
    write_key_file(path, "".join(kept), replace=True)


# --- the keyring -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Loaded:
    keys: dict[str, bytes] = field(repr=False)
    ciphers: dict[str, AESGCM] = field(repr=False)
    signature: tuple | None  # the key file's (mtime, size, inode) when read


def _loaded(keys: dict[str, bytes], signature: tuple | None) -> _Loaded:
    # One AESGCM per key, made once: encrypting a batch creates no object per row.
    return _Loaded(keys, {kid: AESGCM(key) for kid, key in keys.items()}, signature)


def _signature(st: os.stat_result) -> tuple:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Keyring:
    """The keys voxtrail may use: ``active_id`` encrypts, any known id decrypts."""

    def __init__(self, keys: dict[str, bytes], *, source: str, path: Path | None = None,
                 signature: tuple | None = None) -> None:
        if not keys:
            raise KeyringError(f"{source} holds no key")
        self.source = source  # where the keys were looked for, for messages
        self.path = path  # the key file, when keys come from one (reloaded on change)
        self._state = _loaded(dict(keys), signature)
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Keyring(source={self.source!r}, ids={list(self._state.keys)!r})"

    @classmethod
    def load(cls, settings: Settings | None, *, create_default: bool = False,
             key_file: str | os.PathLike | None = None) -> "Keyring | None":
        """The configured keys, or None when there are none (no ``VOXTRAIL_KEYS``, no key file).

        With ``create_default`` and no keys anywhere, the key file is created with a fresh key
        and a WARNING says where, and to back it up.
        """
        env = os.environ.get(ENV_KEYS, "").strip()
        if env:
            return cls(parse_env_keys(env), source=f"{ENV_KEYS} (the key file is not read when it is set)")
        path = key_file_path(settings, key_file)
        if not localfs.exists(path):
            if not create_default:
                return None
            try:
                kid = create_key_file(path)
            except FileExistsError:
                pass  # another process created it first: use its key
            else:
                _warn_once(f"created:{path}",
                           "created encryption key file %s (key %s, mode 0600): back it up; without it the "
                           "encrypted fields of stored events cannot be read", path, kid)
        keys, st = read_key_file(path)
        return cls(keys, source=f"key file {path}", path=path, signature=_signature(st))

    # -- reading keys --
    @property
    def active_id(self) -> str:
        return list(self._current().keys)[-1]

    def ids(self) -> tuple[str, ...]:
        return tuple(self._current().keys)

    def key(self, kid: str) -> bytes:
        return self._current().keys.get(kid) or self._missing(kid)

    def cipher(self, kid: str) -> AESGCM:
        """The AES-GCM instance of a key (cached: one per key)."""
        return self._current().ciphers.get(kid) or self._missing(kid)

    def _missing(self, kid: str):
        known = ", ".join(self._state.keys)
        raise KeyringError(
            f"encryption key {kid!r} is not in the keyring (looked in {self.source}; it has {known}): "
            f"restore the key file line for {kid!r} from your backup"
        )

    # -- reloading --
    def _current(self) -> _Loaded:
        if self.path is not None and time.monotonic() - self._checked_at >= RELOAD_CHECK_SECONDS:
            self._reload_if_changed()
        return self._state

    def _reload_if_changed(self) -> None:
        with self._lock:
            if time.monotonic() - self._checked_at < RELOAD_CHECK_SECONDS:
                return  # another thread just checked
            self._checked_at = time.monotonic()
            try:
                if _signature(os.stat(self.path)) == self._state.signature:
                    return
                keys, st = read_key_file(self.path)
            except (OSError, KeyringError) as exc:
                # Keep the keys in hand: a half-edited or vanished file must not stop a server.
                _warn_once(f"reload:{self.path}:{exc}", "key file %s changed but cannot be used (%s); "
                           "keeping the keys loaded before", self.path, exc)
                return
            self._state = _loaded(keys, _signature(st))
            log.info("reloaded key file %s: active key %s", self.path, list(keys)[-1])


# --- which fields are encrypted ----------------------------------------------------------------

def encrypted_fields(settings: Settings | None) -> tuple[str, ...]:
    """``$VOXTRAIL_ENCRYPT_FIELDS`` (comma list, ``none``) > ``[encrypt] fields`` > ref_audio_url."""
    env = os.environ.get(ENV_FIELDS)
    if env is not None and env.strip():
        names = [] if env.strip().lower() == "none" else [p.strip() for p in env.split(",") if p.strip()]
        origin = ENV_FIELDS
    else:
        section = settings.section("encrypt") if settings is not None else {}
        if "fields" not in section:
            return DEFAULT_FIELDS
        names = section["fields"]
        origin = "[encrypt] fields"
        if isinstance(names, str):
            names = [] if names.lower() == "none" else [names]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{origin} must be a list of field names, e.g. [\"ref_audio_url\", \"text_input\"]")
    unknown = [n for n in names if n not in ENCRYPTABLE_FIELDS]
    if unknown:
        raise ConfigError(f"{origin}: cannot encrypt {', '.join(map(repr, unknown))}; "
                          f"the fields that can be encrypted are {', '.join(ENCRYPTABLE_FIELDS)}")
    if not names:
        _warn_once("fields-off", "field encryption is off (%s is empty): reference audio locations are "
                   "stored in plaintext", origin)
    return tuple(dict.fromkeys(names))

"""``voxtrail keys``: the encryption keys of encrypted fields (docs/encryption.md).

Key material is printed only when asked for (``init --print``, ``generate``); every other
output names key ids, files and counts.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

import click
import sqlalchemy as sa

from voxtrail import config
from voxtrail.cli.common import config_option, db_options, opened_store
from voxtrail.cli.output import err_console, fail, print_json
from voxtrail.cli.params import LocalPath, Name, Seconds
from voxtrail.keys import (
    ENV_KEY_FILE, ENV_KEYS, Keyring, KeyringError, append_key, create_key_file, format_key_line,
    key_file_path, new_key, new_key_id, read_key_file, remove_key,
)
from voxtrail.localfs import exists
from voxtrail.store import Store
from voxtrail.store.engine import first_line
from voxtrail.store.reencrypt import DEFAULT_BATCH, ReencryptState, key_usage, load_state, reencrypt
from voxtrail.transforms.encrypt import DecryptionError

key_file_option = click.option(
    "--key-file", metavar="PATH", type=LocalPath(), envvar=ENV_KEY_FILE,
    help=f"The key file. Env: {ENV_KEY_FILE}; else [keys] file in the config; default ~/.config/voxtrail/keys.",
)
batch_options = [
    click.option("--batch-size", type=click.IntRange(1, 1_000_000), default=DEFAULT_BATCH, show_default=True,
                 help="Rows per transaction: each batch is short and committed with its progress."),
    click.option("--pause", type=Seconds(0, 3600), default=0.0, metavar="SECONDS",
                 help="Wait between batches, to leave room to other clients of a busy database."),
    click.option("--json", "as_json", is_flag=True, help="Print the pass's final state as JSON."),
]


def with_batch_options(command):
    for option in reversed(batch_options):
        command = option(command)
    return command


@click.group("keys")
def keys_group() -> None:
    """Encryption keys: init, list, rotate, reencrypt, retire, generate.

    Keys come from VOXTRAIL_KEYS (id:base64key,..., the last active) or a key file (one
    id:base64key per line, the last active, mode 0600). Losing the keys loses the encrypted
    fields: back the key file up. See docs/encryption.md.
    """


def _settings(config_file: str | None) -> config.Settings:
    try:
        return config.load(config_file=config_file)
    except config.ConfigError as exc:
        fail(str(exc))


def _keyring(settings: config.Settings, key_file: str | None) -> Keyring | None:
    try:
        return Keyring.load(settings, key_file=key_file)
    except KeyringError as exc:
        fail(str(exc))


def _refuse_env_keys(action: str) -> None:
    if os.environ.get(ENV_KEYS, "").strip():
        fail(f"keys come from {ENV_KEYS}, which voxtrail cannot {action}: {_ENV_HELP}")


_ENV_HELP = (f"edit {ENV_KEYS} yourself (a new key goes last: 'voxtrail keys generate' prints one), restart "
             f"the writers, then run 'voxtrail keys reencrypt'; or keep the keys in a key file ({ENV_KEY_FILE})")


@keys_group.command("init")
@key_file_option
@config_option
@click.option("--print", "print_key", is_flag=True,
              help="Also print the new key line (id:base64key) on stdout, e.g. for a password manager.")
def keys_init(key_file, config_file, print_key) -> None:
    """Create the key file with one new key (mode 0600); never overwrites one."""
    settings = _settings(config_file)
    try:
        path = key_file_path(settings, key_file)
        if exists(path):
            fail(f"key file {path} already exists: voxtrail never overwrites keys; "
                 f"add one with 'voxtrail keys rotate'")
        kid = create_key_file(path)
    except KeyringError as exc:
        fail(str(exc))
    except FileExistsError:
        fail(f"key file {path} was just created by another process: voxtrail never overwrites keys")
    except OSError as exc:
        fail(f"cannot create key file {path}: {exc.strerror or exc}")
    click.echo(f"created key file {path} with key {kid} (mode 0600): back it up; without it the encrypted "
               f"fields cannot be read", err=True)
    if os.environ.get(ENV_KEYS, "").strip():
        click.echo(f"note: {ENV_KEYS} is set and wins over the key file", err=True)
    if print_key:
        keys, _ = read_key_file(path)
        click.echo(format_key_line(kid, keys[kid]))


@keys_group.command("generate")
def keys_generate() -> None:
    """Print a new random key line (id:base64key) without storing it anywhere.

    For VOXTRAIL_KEYS: append it after a comma (the last key is the active one).
    """
    click.echo(format_key_line(new_key_id(), new_key()))


@keys_group.command("list")
@key_file_option
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print keys and counts as JSON.")
def keys_list(key_file, db, config_file, as_json) -> None:
    """Key ids (which is active) and how many stored values each encrypts, per column."""
    with opened_store(db, None, config_file) as (store, settings):
        keyring = _keyring(settings, key_file)
        usage = key_usage(store.engine)
        with store.engine.connect() as conn:
            state = load_state(conn)
        fields = store.encrypt_fields
    ids = keyring.ids() if keyring else ()
    active = keyring.active_id if keyring else None
    report = {
        "source": keyring.source if keyring else None,
        "active": active,
        "encrypted_fields": list(fields),
        "keys": [{"id": kid, "active": kid == active, "values": usage.values_under(kid)} for kid in ids],
        "missing_keys": {kid: usage.values_under(kid) for kid in sorted(usage.key_ids() - set(ids))},
        # Plaintext in a configured field: stored before encryption was on, for 'reencrypt'.
        "plaintext": {col: n for col, n in usage.plaintext.items() if n and col in fields},
        "reencrypt": state.__dict__ if state else None,
    }
    if as_json:
        print_json(report)
        return
    _print_report(report)


def _print_report(report: dict) -> None:
    if report["source"] is None:
        click.echo("no keys configured: create a key file with 'voxtrail keys init' (or set VOXTRAIL_KEYS)")
    else:
        click.echo(f"keys from {report['source']}:")
        for key in report["keys"]:
            counts = ", ".join(f"{col} {n:,}" for col, n in key["values"].items()) or "no stored values"
            click.echo(f"  {key['id']:<12} {'active' if key['active'] else '      '}  {counts}")
    for kid, values in report["missing_keys"].items():
        counts = ", ".join(f"{col} {n:,}" for col, n in values.items())
        click.echo(f"  {kid:<12} MISSING  {counts}: these values cannot be read until the key is restored")
    click.echo(f"encrypted fields: {', '.join(report['encrypted_fields']) or 'none'}")
    if report["plaintext"]:
        counts = ", ".join(f"{col} {n:,}" for col, n in report["plaintext"].items())
        click.echo(f"not encrypted yet (stored before encryption was on): {counts}; "
                   f"'voxtrail keys reencrypt' encrypts them")
    state = report["reencrypt"]
    if state:
        where = ("finished" if state["done"] else
                 f"stopped after row id {state['after_id']:,} (continue: 'voxtrail keys reencrypt')")
        click.echo(f"last re-encryption to {state['target']}: {where}; {state['values_encrypted']:,} values in "
                   f"{state['rows_updated']:,} of {state['rows_scanned']:,} rows")


@keys_group.command("rotate")
@key_file_option
@db_options
@with_batch_options
@click.option("--no-reencrypt", is_flag=True, help="Only add the new key; existing rows keep their keys.")
@click.option("--resume", is_flag=True, help="Add no key: continue the interrupted re-encryption.")
def keys_rotate(key_file, db, config_file, batch_size, pause, as_json, no_reencrypt, resume) -> None:
    """Add a new key to the key file, make it active, and re-encrypt stored rows to it.

    Rows are re-encrypted in batches, each its own short transaction; an interrupted pass
    continues with 'voxtrail keys reencrypt' (or 'rotate --resume') where it stopped.
    """
    _refuse_env_keys("rotate")
    with opened_store(db, None, config_file) as (store, settings):
        path = key_file_path(settings, key_file)
        if not exists(path):
            fail(f"no key file at {path}: create one with 'voxtrail keys init'")
        added = {}
        if not resume:
            kid = new_key_id()
            try:
                append_key(path, kid, new_key())
            except KeyringError as exc:
                fail(str(exc))
            except OSError as exc:
                fail(f"cannot write key file {path}: {exc.strerror or exc}")
            added = {"added_key": kid}
            click.echo(f"added key {kid} to {path}; it is now the active key (back the file up again)", err=True)
        keyring = _keyring(settings, str(path))
        if no_reencrypt:
            click.echo("stored rows keep their keys until 'voxtrail keys reencrypt'", err=True)
            if as_json:
                print_json(added)
            return
        _run_pass(store, keyring, batch_size=batch_size, pause=pause, as_json=as_json, extra=added)


@keys_group.command("reencrypt")
@key_file_option
@db_options
@with_batch_options
@click.option("--restart", is_flag=True, help="Start a new pass from the first row instead of continuing.")
def keys_reencrypt(key_file, db, config_file, batch_size, pause, as_json, restart) -> None:
    """Re-encrypt stored rows to the active key: continue an interrupted pass, or run a new one.

    Also encrypts values stored in plaintext before encryption was turned on, in the fields
    configured for encryption. Safe to run while voxtrail writes: each batch is short.
    """
    with opened_store(db, None, config_file) as (store, settings):
        keyring = _keyring(settings, key_file)
        if keyring is None:
            fail(f"no keys configured (no {ENV_KEYS}, no key file at {key_file_path(settings, key_file)}): "
                 f"create one with 'voxtrail keys init'")
        _run_pass(store, keyring, batch_size=batch_size, pause=pause, as_json=as_json, resume=not restart)


def _run_pass(store: Store, keyring: Keyring, *, batch_size: int, pause: float, as_json: bool,
              resume: bool = True, extra: dict | None = None) -> None:
    state: ReencryptState | None = None

    def seen(s: ReencryptState) -> None:
        nonlocal state
        state = s
        advance(s)

    with _progress(enabled=not as_json) as advance:
        try:
            final = reencrypt(store.engine, keyring, store.encrypt_fields, batch_size=batch_size, pause=pause,
                              resume=resume, on_batch=seen)
        except (KeyringError, DecryptionError) as exc:
            fail(f"{exc}; {_resume_hint(state)}")
        except sa.exc.SQLAlchemyError as exc:
            fail(f"re-encryption stopped: {first_line(exc)}; {_resume_hint(state)}")
        except KeyboardInterrupt:
            fail(f"interrupted; {_resume_hint(state)}", 130)
    if as_json:
        print_json({**(extra or {}), **final.__dict__})
        return
    click.echo(f"re-encrypted {final.values_encrypted:,} values in {final.rows_updated:,} of "
               f"{final.rows_scanned:,} rows to key {final.target}")


def _resume_hint(state: ReencryptState | None) -> str:
    done = f"rows up to id {state.after_id:,} are done" if state and state.after_id else "no batch was committed"
    return f"{done}; run 'voxtrail keys reencrypt' to continue"


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[ReencryptState], None]]:
    """A bar over row ids on a terminal (ids are nearly dense, counting rows would cost a scan)."""
    if not enabled or not err_console.is_terminal:
        yield lambda state: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = None
        start = 0

        def advance(state: ReencryptState) -> None:
            nonlocal task, start
            if task is None:
                start = state.after_id
                task = progress.add_task(f"re-encrypting to {state.target}", total=max(state.max_id - start, 1))
            done = max(state.max_id - start, 1) if state.done else min(state.after_id, state.max_id) - start
            progress.update(task, completed=done)

        yield advance


@keys_group.command("retire")
@click.argument("kid", type=Name())
@key_file_option
@db_options
def keys_retire(kid, key_file, db, config_file) -> None:
    """Remove key KID from the key file: refused while stored values still use it."""
    _refuse_env_keys("edit")
    with opened_store(db, None, config_file) as (store, settings):
        path = key_file_path(settings, key_file)
        in_use = key_usage(store.engine).values_under(kid)
        if in_use:
            counts = ", ".join(f"{col} {n:,}" for col, n in in_use.items())
            fail(f"key {kid} still encrypts stored values ({counts}): run 'voxtrail keys reencrypt' first")
        try:
            remove_key(path, kid)
        except KeyringError as exc:
            fail(str(exc))
    click.echo(f"removed key {kid} from {path}; keep an old copy of the file if a database backup may still "
               f"need it", err=True)

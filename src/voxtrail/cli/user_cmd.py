"""``voxtrail user``: the people who may log in to the web app, and their roles.

Roles: viewer (aggregates only), auditor (also individual events and their text), admin (also
users and API tokens).
"""

from __future__ import annotations

import sys

import click

from voxtrail.cli.common import db_options, opened_store
from voxtrail.cli.listing import print_listing, utc_text
from voxtrail.cli.output import fail, print_json
from voxtrail.cli.params import Name

ROLE_CHOICE = click.Choice(["viewer", "auditor", "admin"])


def read_password(password_stdin: bool, prompt: str = "Password") -> str:
    """From the first line of stdin (scripts), else asked twice without echo."""
    if password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            fail("no password on standard input")
        return _text(password.removesuffix("\r"))
    if not sys.stdin.isatty():
        fail("no terminal to ask for a password: pass --password-stdin and write it to standard input")
    return _text(click.prompt(prompt, hide_input=True, confirmation_prompt=True))


def _text(password: str) -> str:
    # Bytes that are not UTF-8 arrive as lone surrogates, which no password hash can encode.
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        fail("the password is not UTF-8 text: check the terminal's or the file's encoding")
    return password


password_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of standard input (for scripts).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@click.group("user")
def user_group() -> None:
    """Manage web users: add, remove, change a password or role, list."""


def _accounts_call(fn, *args):
    from voxtrail.store.accounts import AccountError

    try:
        return fn(*args)
    except AccountError as exc:
        fail(str(exc))


@user_group.command("add")
@click.argument("name", type=Name())
@click.option("--role", type=ROLE_CHOICE, required=True,
              help="viewer: aggregates only; auditor: also events and their text; admin: also users and tokens.")
@password_stdin_option
@db_options
@json_option
def user_add(name, role, password_stdin, db, config_file, as_json) -> None:
    """Create user NAME with a role; the password is asked for (twice) or read from stdin."""
    from voxtrail.store import accounts

    _accounts_call(accounts.check_name, name)  # before the prompt: a typo should not cost a password
    password = read_password(password_stdin)
    with opened_store(db, None, config_file) as (store, _):
        user = _accounts_call(accounts.add_user, store.engine, name, role, password)
    if as_json:
        print_json(user.as_dict())
    else:
        click.echo(f"user {user.name} added with role {user.role}")


@user_group.command("remove")
@click.argument("name", type=Name())
@db_options
def user_remove(name, db, config_file) -> None:
    """Delete user NAME and end their sessions at once."""
    from voxtrail.store import accounts

    with opened_store(db, None, config_file) as (store, _):
        _accounts_call(accounts.remove_user, store.engine, name)
    click.echo(f"user {name} removed")


@user_group.command("passwd")
@click.argument("name", type=Name())
@password_stdin_option
@db_options
def user_passwd(name, password_stdin, db, config_file) -> None:
    """Set a new password for NAME (their sessions end: they log in again)."""
    from voxtrail.store import accounts

    with opened_store(db, None, config_file) as (store, _):
        if accounts.get_user(store.engine, name) is None:
            fail(f"no user named {name!r} (see 'voxtrail user list')")
        password = read_password(password_stdin, "New password")
        _accounts_call(accounts.set_password, store.engine, name, password)
    click.echo(f"password of {name} changed")


@user_group.command("role")
@click.argument("name", type=Name())
@click.argument("role", type=ROLE_CHOICE)
@db_options
def user_role(name, role, db, config_file) -> None:
    """Give user NAME another ROLE (takes effect at their next request)."""
    from voxtrail.store import accounts

    with opened_store(db, None, config_file) as (store, _):
        _accounts_call(accounts.set_role, store.engine, name, role)
    click.echo(f"{name} is now {role}")


@user_group.command("list")
@db_options
@json_option
def user_list(db, config_file, as_json) -> None:
    """List users with their role, creation time and failed logins since their last success."""
    from voxtrail.store import accounts

    with opened_store(db, None, config_file) as (store, _):
        users = accounts.list_users(store.engine)
    print_listing(
        users, as_json=as_json, empty="no users yet: add one with 'voxtrail user add NAME --role admin'",
        columns=("name", "role", "created (UTC)", "password changed (UTC)", "failed logins"),
        row=lambda u: (u.name, u.role, utc_text(u.created_at), utc_text(u.password_changed_at), str(u.failed_logins)),
    )

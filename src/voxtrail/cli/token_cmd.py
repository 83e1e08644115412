"""``voxtrail token``: API tokens for machines (HTTP ingest, /metrics scrapers).

A token's secret (``vxt_`` + 43 characters) is printed once, at creation; the database keeps
only its SHA-256, so a lost secret is replaced, not recovered.
"""

from __future__ import annotations

import click

from voxtrail.cli.common import db_options, opened_store
from voxtrail.cli.listing import print_listing, utc_text
from voxtrail.cli.output import fail, print_json
from voxtrail.cli.params import Name


@click.group("token")
def token_group() -> None:
    """Manage API tokens: create (scope ingest or read), list, revoke."""


@token_group.command("create")
@click.argument("name", type=Name())
@click.option("--scope", type=click.Choice(["ingest", "read"]), default="ingest", show_default=True,
              help="ingest: POST /api/v1/events; read: scrape /metrics.")
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print the token (with its secret) as JSON.")
def token_create(name, scope, db, config_file, as_json) -> None:
    """Create token NAME and print its secret (shown only this once)."""
    from voxtrail.store import accounts

    with opened_store(db, None, config_file) as (store, _):
        try:
            token, secret = accounts.create_token(store.engine, name, scope, created_by="cli")
        except accounts.AccountError as exc:
            fail(str(exc))
    if as_json:
        print_json({**token.as_dict(), "token": secret})
        return
    click.echo(f"token {token.name} (id {token.id}, scope {token.scope}) created; its secret, shown only now:",
               err=True)
    click.echo(secret)


@token_group.command("list")
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print the tokens as JSON.")
def token_list(db, config_file, as_json) -> None:
    """List tokens: id, name, prefix, scope, created, last used, revoked (never the secret)."""
    from voxtrail.store import accounts

    with opened_store(db, None, config_file) as (store, _):
        tokens = accounts.list_tokens(store.engine)
    print_listing(
        tokens, as_json=as_json, empty="no tokens yet: create one with 'voxtrail token create NAME'",
        columns=("id", "name", "prefix", "scope", "created (UTC)", "last used (UTC)", "revoked (UTC)"),
        row=lambda t: (str(t.id), t.name, t.prefix + "…", t.scope, utc_text(t.created_at),
                       utc_text(t.last_used_at) or "never", utc_text(t.revoked_at)),
    )


@token_group.command("revoke")
@click.argument("name_or_id", metavar="NAME|ID", type=Name())
@db_options
def token_revoke(name_or_id, db, config_file) -> None:
    """Revoke a token by name or id: requests with it are refused from now on."""
    from voxtrail.store import accounts

    with opened_store(db, None, config_file) as (store, _):
        try:
            token = accounts.revoke_token(store.engine, name_or_id)
        except accounts.AccountError as exc:
            fail(str(exc))
    click.echo(f"token {token.name} (id {token.id}) revoked")

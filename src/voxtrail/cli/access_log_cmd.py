"""``voxtrail access-log``: who viewed, searched or exported events, and whether the log's hash
chain is intact.

Reading the log here is not itself logged: whoever runs the CLI has the database URL, so could
read the tables directly anyway. The web app logs every read of individual events.
"""

from __future__ import annotations

import click

from voxtrail.cli.common import db_options, opened_store
from voxtrail.cli.listing import print_listing, utc_text
from voxtrail.cli.output import fail, print_json
from voxtrail.cli.params import Name, When
from voxtrail.store.access_log import ACTIONS


@click.command("access-log")
@click.option("--since", type=When(allow_all=True), metavar="WHEN", default="7d", show_default=True,
              help="Oldest entries to show: a duration back from now (90m, 36h, 7d, 2w) or an ISO time "
                   "(UTC unless it has an offset). 'all' for no limit.")
@click.option("--until", type=When(allow_all=True), metavar="WHEN", help="Show entries before this time (same forms as --since).")
@click.option("--actor", type=Name(), metavar="NAME", help="Only this user name.")
@click.option("--action", type=click.Choice(ACTIONS), help="Only this kind of read.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="At most this many entries, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries (or the --verify result) as JSON.")
@click.option("--verify", is_flag=True,
              help="Check the hash chain instead of listing: exit 1 naming the first entry changed, deleted or "
                   "inserted behind voxtrail's back. Prints the newest hash: keep it to check the log later.")
@db_options
def access_log_command(since, until, actor, action, limit, as_json, verify, db, config_file) -> None:
    """Show the access log: who viewed an event, listed or searched events, or exported rows in the
    web app or API, when, what they asked and how many rows they saw. Newest first.
    Reading the log here is not itself logged (see docs/access-log.md).

    \b
    Examples:
      voxtrail access-log                         # the last 7 days
      voxtrail access-log --action export --since 30d
      voxtrail access-log --actor alice --json
      voxtrail access-log --verify
    """
    with opened_store(db, None, config_file) as (store, _):
        if verify:
            _verify(store.engine, as_json)
            return
        from voxtrail.query.access import list_access, parse_when

        try:
            page = list_access(store.engine, since=parse_when(since, "--since"), until=parse_when(until, "--until"),
                               actor=actor, action=action, limit=limit)
        except ValueError as exc:
            fail(str(exc))
    print_listing(
        page.entries, as_json=as_json, empty="no access-log entries match",
        columns=("#", "time (UTC)", "who", "role", "via", "action", "event", "asked", "rows", "client"),
        row=lambda e: (str(e.id), utc_text(e.at), e.actor, e.role or "", e.channel, e.action, e.target or "",
                       e.query_text(), f"{e.row_count:,}", e.client or ""),
    )
    if page.next_cursor and not as_json:
        click.echo(f"(older entries exist: raise --limit above {limit} or narrow --since)", err=True)


def _verify(engine, as_json: bool) -> None:
    from voxtrail.store.access_log import head, verify_access_log

    result = verify_access_log(engine)
    newest = head(engine)
    if as_json:
        print_json({**result._asdict(), **newest})  # last_id/last_hash: a checkpoint to keep
    elif result.ok and not result.checked:
        click.echo("access log OK: no entries yet")
    elif result.ok:
        click.echo(f"access log OK: {result.checked:,} entries, hashes and links match; "
                   f"newest entry {newest['last_id']} hash {newest['last_hash']}")
    if not result.ok:
        fail(f"access log broken at entry {result.first_bad_id}: it was changed, or an entry before it was "
             f"deleted or inserted, outside voxtrail (the {result.checked - 1:,} before it verify)")

"""``voxtrail rollup rebuild``: recompute the dashboard's rollups from the stored events."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from voxtrail.cli.common import db_options, opened_store
from voxtrail.cli.output import err_console, fail, print_json
from voxtrail.cli.params import When


@click.group("rollup")
def rollup_command() -> None:
    """Maintain the rollups (pre-aggregated tables) behind the dashboard and reports.

    Every import keeps them up to date; databases upgraded to schema 0003 are rolled up by the
    upgrade itself. Rebuild after editing tts_events by hand.
    """


@rollup_command.command("rebuild")
@db_options
@click.option("--since", type=When(), metavar="TIME",
              help="Only days from this UTC time on (ISO-8601 or relative like 7d). Default: all stored events.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object.")
def rebuild_command(db, config_file, since, as_json) -> None:
    """Recompute the rollups from tts_events, one UTC day per transaction, with a progress bar.

    Imports may keep running: each day is rebuilt under the writers' lock. Days whose raw events
    are gone (deleted by retention) keep their rollups.
    """
    from voxtrail.query.filters import parse_time
    from voxtrail.store import rollups

    start = None
    if since:
        try:
            start = parse_time(since, now=datetime.now(timezone.utc), tz=timezone.utc, name="--since")
        except ValueError as exc:
            fail(str(exc))
    with opened_store(db, None, config_file) as (store, _):
        with store.engine.connect() as conn:
            total = len(rollups.event_days(conn, start))
        done = _rebuild_with_progress(store, rollups, start, total, show=not as_json)
        url = store.display_url
    if as_json:
        print_json({"db": url, "days": done})
    else:
        click.echo(f"rebuilt the rollups of {done} day(s) in {url}")


def _rebuild_with_progress(store, rollups, start, total: int, show: bool) -> int:
    if not show or not err_console.is_terminal:
        return rollups.rebuild(store.engine, store.dialect, start)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("rebuilding rollups"), BarColumn(), MofNCompleteColumn(), TextColumn("days"),
               TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("days", total=total)
        return rollups.rebuild(store.engine, store.dialect, start, on_day=lambda _d: progress.advance(task))

"""``voxtrail status``: what the database holds and how far each log has been imported."""

from __future__ import annotations

import click

from voxtrail.cli.common import db_options, opened_store
from voxtrail.cli.output import print_json


@click.command("status")
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as a JSON object.")
def status_command(db, config_file, as_json) -> None:
    """Show event and reject counts, the time range covered, and each log stream's position.

    A stream is one log file's content, followed across renames and rotations; 'behind' is how
    many bytes were written to it since the last import.
    """
    from voxtrail.query.status import store_status

    with opened_store(db, None, config_file) as (store, _):
        status = store_status(store.engine)
        url = store.display_url
    if as_json:
        print_json({"db": url, **status.as_dict()})
        return
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False, markup=False)  # stream paths are shown as they are, never as markup

    span = f"{status.first_ts} .. {status.last_ts} UTC" if status.events else "no events yet"
    out.print(f"{url}\n{status.events:,} events ({status.failed:,} failed), {span}; "
                      f"{status.rejects:,} rejected lines")
    if status.streams:
        table = Table(box=None, header_style="bold")
        for column in ("stream", "format", "imported bytes", "behind", "updated (UTC)", "last seen at"):
            table.add_column(column)
        for s in status.streams:
            behind = "?" if s.behind is None else f"{s.behind:,}"
            table.add_row(s.stream_id, s.format, f"{s.offset:,}", behind, str(s.updated_at)[:19], s.path)
        out.print(table)

"""``voxtrail schema``: the column reference of the database, for people and for scripts."""

from __future__ import annotations

import click

from voxtrail.cli.output import print_json


@click.command("schema")
@click.option("--json", "as_json", is_flag=True, help="Print the columns as a JSON array.")
@click.option("--markdown", is_flag=True, help="Print the Markdown reference embedded in docs/schema.md.")
def schema_command(as_json: bool, markdown: bool) -> None:
    """Describe the tables voxtrail writes (tts_events, tts_rejects, import_checkpoints).

    Point Redash, Grafana or Metabase at the database and query these columns; they change
    only through migrations, which voxtrail applies on first use.
    """
    from voxtrail.store import schema_doc

    if as_json:
        print_json(schema_doc.as_records())
    elif markdown:
        click.echo(schema_doc.render_markdown(), nl=False)
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        current = None
        table = None
        for record in schema_doc.as_records():
            if record["table"] != current:
                if table is not None:
                    console.print(table)
                current = record["table"]
                table = Table(title=current, title_justify="left", show_lines=False)
                for name in ("column", "PostgreSQL type", "meaning"):
                    table.add_column(name, overflow="fold")
            table.add_row(record["column"], record["types"]["PostgreSQL"], record["meaning"])
        console.print(table)

"""Listings of records (users, tokens): JSON for scripts, an aligned table for people."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Sequence

import click

from voxtrail.cli.output import print_json


def utc_text(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def print_listing(records: Sequence[Any], *, as_json: bool, empty: str, columns: Sequence[str],
                  row: Callable[[Any], Sequence[str]]) -> None:
    """``records`` have ``as_dict()``; ``empty`` is said (to a person) when there are none."""
    if as_json:
        print_json([r.as_dict() for r in records])
        return
    if not records:
        click.echo(empty)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for record in records:
        table.add_row(*row(record))
    out = Console(highlight=False, markup=False)  # names and asked texts are shown, never parsed as markup
    if not out.is_terminal:  # a pipe or a file: never truncate what scripts read
        out.width = 200
    out.print(table)

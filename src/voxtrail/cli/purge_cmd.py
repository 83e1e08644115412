"""``voxtrail purge``: placeholder while the command is being built (issue 5)."""

from __future__ import annotations

import click


@click.command("purge")
def purge_command() -> None:
    """Not built yet."""

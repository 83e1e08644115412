"""``voxtrail verify``: placeholder while the command is being built (issue 5)."""

from __future__ import annotations

import click


@click.command("verify")
def verify_command() -> None:
    """Not built yet."""

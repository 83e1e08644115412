"""How the CLI talks: one-line errors, JSON for scripts, tables and progress for people."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator, NoReturn

import orjson
from rich.console import Console

err_console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and exit: the only way the CLI reports a user's error."""
    print(f"voxtrail: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def print_json(obj) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def print_json_line(obj) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


@contextmanager
def byte_progress(total: int | None, enabled: bool, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar over bytes on a terminal; a no-op when output is not for a person."""
    if not enabled or not err_console.is_terminal:
        yield lambda n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


@contextmanager
def count_progress(total: int | None, enabled: bool, description: str, unit: str = "rows") -> Iterator[Callable[[int], None]]:
    """A progress bar over counted items (rows, events) on a terminal; a no-op otherwise."""
    if not enabled or not err_console.is_terminal:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)

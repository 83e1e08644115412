"""How the CLI talks: one-line errors, JSON for scripts, tables and progress for people."""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, NoReturn

import orjson
from rich.console import Console
from rich.markup import escape

err_console = Console(stderr=True, highlight=False)

#: Characters that would break a message's one line (or drive the terminal): line ends, other
#: control characters, Unicode's line and paragraph separators.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with line breaks and control characters shown as escapes (``\\n``)."""
    return _BREAKS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and exit: the only way the CLI reports a user's error. Values in
    the message (a file name, a flag's value) cannot break the line."""
    print(f"voxtrail: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(code)


def plain(text: str) -> str:
    """``text`` for a rich markup string: a path or value with ``[`` in it is shown, not parsed
    (``[/x]`` would otherwise stop the command with a MarkupError)."""
    return escape(str(text))


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

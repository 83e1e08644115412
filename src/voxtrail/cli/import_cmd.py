"""``voxtrail import`` and ``voxtrail tail``: log files into the store, once each line."""

from __future__ import annotations

import glob
import os
import signal
import threading

import click

from voxtrail.cli.common import import_options, opened_store
from voxtrail.cli.output import byte_progress, err_console, fail, plain, print_json, print_json_line
from voxtrail.cli.params import Seconds
from voxtrail.sources.files import reader
from voxtrail.sources.files.importer import Importer, UnusablePath, Summary, expand_paths
from voxtrail.store.purge import past_retention_note

EXIT_PARTIAL = 1


def register(app: click.Group) -> None:
    app.add_command(import_command)
    app.add_command(tail_command)


@click.command("import")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@import_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (imported, duplicates, rejected, ...) on stdout.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on a terminal.")
@click.option("--chunk-bytes", type=click.IntRange(4096, 64 << 20), default=reader.CHUNK_BYTES,
              hidden=True)
def import_command(paths, db, fmt, tz, config_file, as_json, progress, chunk_bytes) -> None:
    """Import log files (paths or quoted globs such as 'logs/tts.log*'), exactly once.

    Each file's position is remembered in the database with the rows it covers, so running
    the same command again imports only what was appended; rotated (renamed, copytruncated,
    gzip-compressed) files are recognised by their content. Lines that cannot be parsed are
    kept in the tts_rejects table with the reason, and the import goes on.
    """
    files = _expand(paths)
    with opened_store(db, tz, config_file) as (store, settings):
        total = sum(os.path.getsize(p) for p in files)
        with byte_progress(total, progress and not as_json, "importing") as advance:
            importer = Importer(store, fmt=fmt, tz=settings.tz, progress=advance, chunk_bytes=chunk_bytes)
            summary = _interruptible(lambda: importer.run(files))
        retention = store.retention
    _report(summary, as_json, retention)
    if any(f.status == "error" for f in summary.files):
        raise SystemExit(EXIT_PARTIAL)


@click.command("tail")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@import_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per import pass that stored something.")
@click.option("--interval", type=Seconds(0.05, 3600), default=1.0, show_default=True,
              help="Seconds between checks when no file event arrives.")
def tail_command(paths, db, fmt, tz, config_file, as_json, interval) -> None:
    """Follow log files: import new lines as they are written, through rotations.

    Files matching a quoted glob that appear later are picked up. Stops on Ctrl-C or SIGTERM,
    after finishing the batch in hand.
    """
    from voxtrail.sources.files.follow import follow  # watchdog: only when following

    named = [p for p in paths if not glob.has_magic(p) and os.path.lexists(p)]
    if named:
        _expand(named)  # a directory or FIFO named on its own is a mistake now, not skipped forever
    with opened_store(db, tz, config_file) as (store, settings):
        importer = Importer(store, fmt=fmt, tz=settings.tz)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        if not as_json:
            err_console.print(plain(f"following {', '.join(paths)} into {store.display_url} (Ctrl-C to stop)"))
        follow(importer, paths, stop=stop, poll_interval=interval,
               on_pass=lambda s: _report_pass(s, as_json, store.retention),
               on_error=lambda exc: err_console.print(f"[yellow]waiting for the database[/yellow]: {plain(exc)}"))


def _expand(paths: list[str]) -> list[str]:
    try:
        return expand_paths(paths)
    except UnusablePath as exc:
        fail(str(exc))


def _interruptible(run):
    try:
        return run()
    except KeyboardInterrupt:
        fail("interrupted; everything up to the last committed batch is stored, run again to continue", 130)


def _retention_note(summary: Summary, retention) -> str | None:
    """Said at once, on stderr, when events just stored are already past retention (docs/retention.md)."""
    past = summary.total("past_retention")
    return past_retention_note(past, retention) if past else None


def _report(summary: Summary, as_json: bool, retention=None) -> None:
    note = _retention_note(summary, retention)
    if as_json:
        print_json({**summary.as_dict(), **({"note": note} if note else {})})
        return
    for f in summary.files:
        if f.status == "error":
            err_console.print(f"[red]error[/red]: {plain(f.message)}")
    from rich.table import Table

    table = Table(box=None, show_header=True, header_style="bold")
    for column in ("file", "format", "imported", "duplicates", "rejected"):
        table.add_column(column, justify="left" if column in ("file", "format") else "right")
    for f in summary.files:
        table.add_row(plain(f.path), f.format or "-", f"{f.imported:,}", f"{f.duplicates:,}", f"{f.rejected:,}")
    err_console.print(table)
    rate = summary.total("imported") / summary.seconds if summary.seconds else 0
    err_console.print(
        f"{summary.total('imported'):,} imported, {summary.total('duplicates'):,} duplicates, "
        f"{summary.total('rejected'):,} rejected in {summary.seconds:.2f} s ({rate:,.0f} events/s)"
    )
    if note:
        err_console.print(f"[yellow]note[/yellow]: {plain(note)}")


def _report_pass(summary: Summary, as_json: bool, retention=None) -> None:
    stored = summary.total("imported") + summary.total("rejected")
    note = _retention_note(summary, retention)
    if as_json:
        if stored or any(f.status == "error" for f in summary.files):
            print_json_line({**summary.as_dict(), **({"note": note} if note else {})})
        return
    if note:
        err_console.print(f"[yellow]note[/yellow]: {plain(note)}")
    for f in summary.files:
        if f.status == "error":
            err_console.print(f"[red]error[/red]: {plain(f.message)}")
        elif f.imported or f.rejected:
            err_console.print(plain(f"{f.path}: +{f.imported} events" + (f", {f.rejected} rejected" if f.rejected else "")))


"""``voxtrail demo``: a month of realistic generations in a SQLite file, served on 127.0.0.1.

The events go through the normal write path (``Store.write``, the same transactions and rollups
as an import), so the demo shows what a real database would. The synthetic month is seeded and
its request_ids are deterministic: running the command again on the same file stores nothing
twice. A demo admin gets a fresh random password on every run, printed once.
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from pathlib import Path

import click

from voxtrail.cli.output import fail, print_json
from voxtrail.cli.params import LocalPath

DEFAULT_DB_PATH = "voxtrail-demo.db"
DEFAULT_EVENTS = 100_000
DEMO_USER = "demo"


HOST = "127.0.0.1"


def _fill(store, spec, quiet: bool) -> tuple[int, int, float]:
    """(inserted, how many of them are older than the retention, seconds)."""
    from voxtrail.demo.synthetic import generate

    started = time.perf_counter()
    inserted = past = 0
    events, days = spec.events, spec.days
    if not quiet:
        click.echo(f"Generating {events:,} TTS generations over {days} days ...", err=True)
    for batch in generate(spec):
        result = store.write(batch)
        inserted += result.inserted
        past += result.past_retention
    return inserted, past, time.perf_counter() - started


@click.command("demo")
@click.option("--db", "db_path", metavar="PATH", type=LocalPath(text=True), default=DEFAULT_DB_PATH, show_default=True,
              help="SQLite file to create (or reuse: the same month is not stored twice).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port on 127.0.0.1 to serve the dashboard on; 0 picks a free one.")
@click.option("--no-serve", is_flag=True, help="Fill the database and create the user, then exit.")
@click.option("--days", type=click.IntRange(1, 366), default=30, show_default=True,
              help="Length of the generated period, ending at the current hour.")
@click.option("--events", type=click.IntRange(0, 50_000_000), default=DEFAULT_EVENTS, show_default=True,
              help="Number of generations to create (100,000 take a few seconds).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Random seed of the synthetic data.")
@click.option("--json", "as_json", is_flag=True, help="Print the database, URL and credentials as JSON.")
def demo_command(db_path, port, no_serve, days, events, seed, as_json) -> None:
    """Create a demo database with a realistic month of generations and serve the dashboard.

    Several nodes, two model versions side by side, daily and weekly rhythm, and a bad hour of
    failures and slow requests on one node. A user 'demo' (role admin) gets a random password,
    printed once; the dashboard is served on http://127.0.0.1:PORT until Ctrl-C.
    """
    from voxtrail.demo.synthetic import NODES, SyntheticMonth
    from voxtrail.localfs import LocalFileError, check_regular_file
    from voxtrail.store import Store, StoreError, accounts

    path = Path(db_path)
    try:
        if path.exists():
            check_regular_file(path, "demo database")
        url = f"sqlite:///{path.resolve()}"
    except LocalFileError as exc:
        fail(f"{exc}: pass a file name with --db")
    except OSError as exc:  # a name too long for the file system
        fail(f"cannot use {db_path} as the demo database: {exc.strerror or exc}")
    if not no_serve and port:
        from voxtrail.cli.serve_cmd import bind_socket

        bind_socket(HOST, port).close()  # a busy port is reported now, not after the data is made
    password = secrets.token_urlsafe(12)
    try:
        store = Store.open(url)
    except StoreError as exc:
        fail(str(exc))
    try:
        spec = SyntheticMonth(events=events, days=days, seed=seed, chunk_size=min(50_000, max(events, 1)))
        inserted, past, seconds = _fill(store, spec, as_json)
        if accounts.get_user(store.engine, DEMO_USER) is None:
            accounts.add_user(store.engine, DEMO_USER, "admin", password)
        else:
            accounts.set_role(store.engine, DEMO_USER, "admin")
            accounts.set_password(store.engine, DEMO_USER, password)
        total = store.count()
    except StoreError as exc:
        store.close()
        fail(str(exc))
    except BaseException:
        store.close()
        raise
    if as_json:
        print_json({"db": url, "events": total, "inserted": inserted, "past_retention": past,
                    "seconds": round(seconds, 2), "user": DEMO_USER, "password": password})
    else:
        click.echo(f"Database: {path} ({total:,} events; {inserted:,} new in {seconds:.1f} s)")
        click.echo(f"User:     {DEMO_USER}")
        click.echo(f"Password: {password}   (shown once; run 'voxtrail demo' again for a new one)")
        if past:
            from voxtrail.store.purge import past_retention_note

            click.echo(f"Note:     {past_retention_note(past, store.retention)} (the demo server itself "
                       "does not purge)")
    try:
        if not no_serve:
            bad = spec.resolved_bad_hour()
            if spec.resolved_end() - timedelta(days=days) <= bad:
                click.echo(f"Look for the bad hour: {bad:%Y-%m-%d %H:00} UTC, failures and slow calls on node "
                           f"{NODES[2]} (pick 'Last 30 days' or a custom range).")
            _serve(store, url, port)
    finally:
        store.close()


def _serve(store, url: str, port: int) -> None:
    from voxtrail.cli.serve_cmd import run_server
    from voxtrail.web.settings import WebSettings

    click.echo("Log in at the address below as the user above; Ctrl-C stops the server.")
    try:
        run_server(WebSettings(db=url, host=HOST, port=port), store, log_level="warning", announce="dashboard at")
    except KeyboardInterrupt:
        return  # Ctrl-C is how the demo ends: not an error

"""``voxtrail purge``: retention, deleting raw events older than the configured ages."""

from __future__ import annotations

import click

from voxtrail.cli.common import db_options, opened_store
from voxtrail.cli.output import count_progress, err_console, fail, print_json
from voxtrail.cli.params import Age


@click.command("purge")
@db_options
@click.option("--audit", type=Age("retention audit"), metavar="AGE",
              help="Keep audit events (with user_id or text_input) this long: 180d (default), 26w, 72h, off. "
                   "Env: VOXTRAIL_RETENTION_AUDIT; TOML [retention] audit.")
@click.option("--operations", type=Age("retention operations"), metavar="AGE",
              help="Keep operations events (no user or text) and quarantined rejects this long: 90d (default), "
                   "off. Env: VOXTRAIL_RETENTION_OPERATIONS; TOML [retention] operations.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--batch-size", default=5000, show_default=True, type=click.IntRange(1, 100_000),
              help="Rows deleted per transaction (each holds its locks only that long).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def purge_command(db, config_file, audit, operations, dry_run, batch_size, as_json) -> None:
    """Delete raw events older than the retention ages, in short batches.

    Rollups stay, so the dashboard's long-range charts keep their history; the hash chain
    keeps what it needs, so 'voxtrail verify' still passes. Safe to interrupt and run again.
    'voxtrail serve' runs this daily.
    """
    from voxtrail.config import ConfigError
    from voxtrail.store import purge

    with opened_store(db, None, config_file) as (store, settings):
        try:
            retention = purge.Retention.from_settings(settings, audit, operations)
        except ConfigError as exc:
            fail(str(exc))
        cutoffs = retention.cutoffs(purge.utcnow())
        if dry_run:
            result = purge.preview(store.engine, cutoffs)
        else:
            shown = not as_json and err_console.is_terminal  # a count only a progress bar needs
            total = purge.preview(store.engine, cutoffs).events if shown else None
            with count_progress(total, shown, "purging", "events") as advance:
                result = purge.purge(store.engine, store.dialect, cutoffs, batch=batch_size, progress=advance)
        where = store.display_url
    if as_json:
        print_json({"db": where, **result.as_dict()})
        return
    click.echo(describe(result, where))


def describe(result, where: str) -> str:
    verb = "would delete" if result.dry_run else "deleted"
    if not result.events and not result.rejects:
        return f"nothing to purge in {where} ({_cutoff_text(result.cutoffs)})"
    span = f", from {result.oldest:%Y-%m-%d %H:%M} to {result.newest:%Y-%m-%d %H:%M} UTC" if result.oldest else ""
    text = (f"{verb} {result.events:,} events ({result.audit_events:,} audit, {result.operations_events:,} "
            f"operations{span}) and {result.rejects:,} quarantined rejects from {where} ({_cutoff_text(result.cutoffs)})")
    if not result.dry_run:
        text += f" in {result.seconds:.1f} s; rollups kept"
    return text


def _cutoff_text(cutoffs) -> str:
    parts = []
    for name, value in (("audit", cutoffs.audit), ("operations", cutoffs.operations)):
        parts.append(f"{name} before {value:%Y-%m-%d %H:%M} UTC" if value else f"{name} kept forever")
    return ", ".join(parts)

"""``voxtrail verify``: check the hash chain of tts_events; export and check checkpoints."""

from __future__ import annotations


import click
import orjson

from voxtrail.cli.common import db_options, opened_store
from voxtrail.cli.output import count_progress, err_console, fail, print_json
from voxtrail.cli.params import LocalPath

EXIT_BROKEN = 3


@click.command("verify")
@db_options
@click.option("--export", "export", is_flag=True,
              help="After a successful check, print a checkpoint (JSON) for a third party to keep.")
@click.option("--checkpoint", "checkpoint_file", metavar="FILE", type=LocalPath(),
              help="Also prove that nothing up to this earlier checkpoint was rewritten.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(db, config_file, export, checkpoint_file, as_json) -> None:
    """Walk the hash chain and report the first broken link.

    Every row of tts_events carries a hash of its content; every write appends a link covering
    its rows and the previous link. A row changed, deleted or inserted behind voxtrail's back,
    or rows reordered, break it; retention purges and key rotation do not. Exit status 0 when
    the chain holds, 3 when it is broken, 1 when it cannot be checked (e.g. missing keys).
    """
    from voxtrail.keys import KeyringError
    from voxtrail.store.verify import VerifyError, make_checkpoint, verify

    checkpoint = _read_checkpoint(checkpoint_file) if checkpoint_file else None
    with opened_store(db, None, config_file) as (store, _):
        shown = not as_json and err_console.is_terminal  # a count only a progress bar needs
        total = store.count() if shown else None
        try:
            keyring = store.keyring
            with count_progress(total, shown, "verifying") as advance:
                report = verify(store.engine, keyring, checkpoint=checkpoint, progress=advance)
        except (VerifyError, KeyringError) as exc:
            fail(str(exc))
        where = store.display_url
    if report.ok and export:
        report.checkpoint = make_checkpoint(report, where)
    if as_json:
        print_json(report.as_dict())
    elif export and report.ok:
        click.echo(orjson.dumps(report.checkpoint, option=orjson.OPT_INDENT_2).decode())
    _summary(report, checkpoint, quiet=as_json or export)
    if not report.ok:
        raise SystemExit(EXIT_BROKEN)


def _read_checkpoint(path: str) -> dict:
    from voxtrail.localfs import LocalFileError, read_small_file

    try:
        data = orjson.loads(read_small_file(path, "checkpoint file")[0])
    except LocalFileError as exc:
        fail(str(exc))
    except orjson.JSONDecodeError as exc:
        fail(f"checkpoint file {path} is not JSON: {exc}")
    if not isinstance(data, dict):
        fail(f"checkpoint file {path} does not hold a voxtrail checkpoint (a JSON object)")
    return data


def _summary(report, checkpoint, quiet: bool) -> None:
    if not report.ok:
        click.echo(f"BROKEN: {report.problem.message}", err=True)
        return
    if quiet:
        return
    parts = [f"{report.rows_checked:,} rows in {report.links - 1:,} writes verified"]
    if report.rows_purged:
        parts.append(f"{report.rows_purged:,} removed by retention accounted for")
    if report.rows_before_chain:
        parts.append(f"{report.rows_before_chain:,} rows predate the chain and are not covered")
    click.echo("OK: " + "; ".join(parts) + f"; head link {report.head_seq} {report.head_hash[:16]}…")
    if checkpoint is not None:
        click.echo(f"checkpoint of {checkpoint['taken_at']} (link {checkpoint['seq']}) matches")

"""The ``voxtrail`` command.

Errors a user can cause (a bad flag, a missing file, an unreachable database) end in one line
on stderr and a non-zero exit status, never a traceback: :func:`main` is the only place that
turns exceptions into exit codes. An exception nobody expected is a bug: it too ends in one line
(exit status 70), with the traceback only when ``VOXTRAIL_DEBUG`` is set.
"""

from __future__ import annotations

import os
import sys

import click

from voxtrail import __version__
from voxtrail.cli import import_cmd
from voxtrail.cli.schema_cmd import schema_command
from voxtrail.cli.status_cmd import status_command
from voxtrail.cli.report_cmd import report_command
from voxtrail.cli.rollup_cmd import rollup_command
from voxtrail.cli.serve_cmd import serve_command
from voxtrail.cli.user_cmd import user_group
from voxtrail.cli.token_cmd import token_group
from voxtrail.cli.demo_cmd import demo_command
from voxtrail.cli.collect_cmd import collect_command
from voxtrail.cli.keys_cmd import keys_group
from voxtrail.cli.purge_cmd import purge_command
from voxtrail.cli.verify_cmd import verify_command
from voxtrail.cli.access_log_cmd import access_log_command
from voxtrail.cli.output import fail

# Exit statuses, documented in the README.
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE of sysexits.h
EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="voxtrail")
def app() -> None:
    """Observability and audit trail for self-hosted text-to-speech services.

    Imports TTS logs (IndexTTS2 console output, seed-style text and JSON logs, audit records)
    and events from running services (the Python Recorder, HTTP ingest, Redis) into one
    documented table, tts_events, in SQLite, PostgreSQL or MySQL/MariaDB, and serves a
    dashboard, audit pages and Prometheus metrics over it. Start with 'voxtrail demo'.
    """


import_cmd.register(app)
app.add_command(schema_command)
app.add_command(status_command)
app.add_command(report_command)
app.add_command(rollup_command)
app.add_command(collect_command)
app.add_command(serve_command)
app.add_command(user_group)
app.add_command(token_group)
app.add_command(demo_command)
app.add_command(keys_group)
app.add_command(purge_command)
app.add_command(verify_command)
app.add_command(access_log_command)


def main(argv: list[str] | None = None) -> None:
    try:
        code = app.main(args=argv, prog_name="voxtrail", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help(), err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "voxtrail"
        fail(f"{exc.format_message()} (see '{command} --help')", EXIT_USAGE)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line rather than in a traceback
        if os.environ.get("VOXTRAIL_DEBUG"):
            raise
        fail(f"internal error (a bug in voxtrail, please report it): {type(exc).__name__}: {exc}; "
             f"set VOXTRAIL_DEBUG=1 to see where", EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)

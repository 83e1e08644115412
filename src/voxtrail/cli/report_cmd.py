"""``voxtrail report``: the dashboard's figures as tables in the terminal, or as JSON."""

from __future__ import annotations

import click

from voxtrail.cli.common import db_options, opened_store
from voxtrail.cli.output import fail, print_json
from voxtrail.cli.params import Name, When, Zone

#: Panels printed as tables, in order (``--json`` prints every panel).
TABLES = ("summary", "daily", "by_emotion", "by_text_length", "percentiles", "errors", "by_node", "by_model")
_UNIT_SUFFIX = {"%": " %", "ms": " ms", "s": " s", "x": "x"}


def _dimension(name: str, help_text: str):
    return click.option(f"--{name.replace('_', '-')}", name, type=Name(), multiple=True, metavar="VALUE",
                        help=f"Only {help_text} (repeat, or separate with commas, for several).")


@click.command("report")
@db_options
@click.option("--since", type=When(), default="7d", show_default=True, metavar="TIME",
              help="Start: ISO-8601 (2026-11-01, 2026-11-01T08:00+08:00) or relative to now (90m, 36h, 7d, 2w).")
@click.option("--until", type=When(), metavar="TIME", help="End (same forms as --since). Default: now.")
@click.option("--tz", type=Zone(), metavar="ZONE", default="UTC", show_default=True,
              help="Time zone of days and hours (IANA name, e.g. Asia/Shanghai); also read into times without offset.")
@_dimension("node", "these nodes")
@_dimension("model", "these models")
@_dimension("model_version", "these model versions")
@_dimension("emotion", "these emotions")
@_dimension("emotion_control", "these emotion control modes (speaker, audio, vector, text)")
@_dimension("status", "this status (success or failed)")
@click.option("--json", "as_json", is_flag=True, help="Print every dashboard panel as JSON (the web API's shapes).")
def report_command(db, config_file, since, until, tz, node, model, model_version, emotion, emotion_control,
                   status, as_json) -> None:
    """Print the dashboard's figures for a time range: per day, per emotion, per text length,
    latency percentiles, top errors, nodes and model versions.

    Ranges are whole hours (since is rounded down, until up). Example:
    voxtrail report --since 30d --node tts-a --tz Asia/Shanghai
    """
    from voxtrail.query.filters import Filters
    from voxtrail.query.panels import PANELS, dashboard

    params = {"since": since, "until": until, "tz": tz, "node": list(node), "model": list(model),
              "model_version": list(model_version), "emotion": list(emotion),
              "emotion_control": list(emotion_control), "status": list(status)}
    try:
        filters = Filters.from_params({k: v for k, v in params.items() if v})
    except ValueError as exc:
        fail(str(exc))
    except OverflowError:  # a time without offset that --tz moves out of years 1-9999
        fail(f"--since {since!r} or --until {until!r} is out of range in time zone {tz}")
    with opened_store(db, None, config_file) as (store, _):
        result = dashboard(store, filters, None if as_json else TABLES, messages=True)
        url = store.display_url
    if as_json:
        print_json({"db": url, **result})
        return
    _print_tables(url, filters, result, {name: PANELS[name].title for name in TABLES})


def _cell(value, unit: str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.3f}" if unit == "x" else f"{value:,.2f}" if unit in ("%", "s") else f"{value:,.1f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        return str(value)
    return text + _UNIT_SUFFIX.get(unit or "", "")


def _print_tables(url: str, filters, result: dict, titles: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = Console(highlight=False, markup=False)  # stored values ("[/x]") are shown, never parsed as markup
    scope = ", ".join(f"{k}={','.join(v)}" for k, v in filters.active().items()) or "all calls"
    out.print(f"{url}: {result['since']} .. {result['until']} ({filters.tz}), {scope}")
    for name, panel in result["panels"].items():
        if panel["empty"]:
            out.print()
            out.print(Text.assemble((titles[name], "bold"), ": no calls in this range"))
            continue
        table = Table(title=titles[name], title_justify="left", header_style="bold")
        units = panel["units"]
        for column in panel["columns"]:
            numeric = units.get(column) not in (None, "characters") or column == "calls"
            table.add_column(column.replace("_", " "), justify="right" if numeric else "left")
        for row in panel["rows"]:
            table.add_row(*(_cell(v, units.get(c)) for c, v in zip(panel["columns"], row)))
        out.print()
        out.print(table)

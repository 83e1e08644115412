"""The dashboard's panels: one query layer for the web pages, the JSON API and ``voxtrail report``.

``dashboard(store, filters)`` computes every panel (or those named) over one connection; panels
that need the same figures share one rollup read (:class:`voxtrail.query.reads.Reader`).
``PANELS[name](store_or_connection, filters)`` computes one. ``filter_options(store, filters)``
lists the values of each filter menu.

Every panel returns a JSON-able dict::

    {"columns": [name, ...],            # the order of each row's values
     "units": {name: unit or None},     # "ms", "%", "s", "x" (RTF), "calls", "characters"
     "rows": [[value, ...], ...],       # numbers already rounded for display; null = no data
     "empty": bool}                     # true when no call matched: say so, draw nothing

plus, for panels over time, ``"bucket": "hour" | "day"`` and ``"tz"``; a ``time`` column holds
``"2026-11-01"`` for days (the local calendar date) and local ISO-8601 with offset for hours
(``"2026-11-01T14:00:00+08:00"``). Time series list every bucket of the range, with 0 calls and
null means where nothing happened. Panels over time use hours for ranges up to 2 days, days
beyond (``daily`` and ``hourly`` always use their own). Exact shapes:

``summary``         one row: calls, failures, success_rate %, mean_latency ms, p50_latency ms,
                    p95_latency ms, mean_rtf x, mean_audio_length s
``daily``           time, calls, success_rate %, mean_latency ms (seed 000's first query)
``hourly``          time, calls, success_rate %, mean_latency ms
``by_emotion``      emotion (null = none recorded), calls, mean_latency ms, success_rate %;
                    most calls first (seed 000's second query)
``by_text_length``  length_bucket (``<50``, ``50-150``, ``>150``: seed 000's CASE, 150 is long),
                    calls, success_rate %, mean_latency ms, mean_latency_success ms (seed 000's
                    third query averages successful calls only)
``latency_vs_length`` text_length characters, latency_ms ms, status: the latest ``limit`` (2000)
                    calls of the view (``"sample": "latest"``, ``"limit": 2000``)
``heatmap``         weekday (0 = Monday), hour (0-23, local), calls: all 168 cells; ``"weekdays"``
                    names them
``percentiles``     time, p50, p90, p95, p99 ms (nearest rank, from histograms: within 1 %)
``rtf_audio``       time, mean_rtf x, mean_audio_length s, total_audio s
``stages``          time, gpt_gen, gpt_forward, s2mel, bigvgan: mean ms of IndexTTS2's stages
``errors``          error_type, calls, share % of failures: the top 10 types; ``"failures"`` =
                    all failed calls of the view. With ``messages=True`` (auditors, the CLI):
                    error_type, message (first 80 characters), calls, share: the top 10 pairs
``failure_rate``    time, calls, failures, failure_rate %
``by_node``         node, calls, success_rate %, mean_latency ms, p95_latency ms, mean_rtf x
``by_model``        model, model_version, calls, success_rate %, mean_latency ms, p50_latency ms,
                    p95_latency ms, mean_rtf x (the A/B comparison)

``dashboard`` returns ``{"filters": filters.to_params(), "since": ISO, "until": ISO, "tz": name,
"panels": {name: panel, ...}}``.

No panel holds text from an event unless asked: error messages are where a user's words leak
(an exception quoting its input), so ``errors`` counts types, and only ``messages=True`` adds the
message prefixes (docs/access-log.md: who may see them, and how that read is logged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import sqlalchemy as sa

from voxtrail.query import panels_dims, panels_latency, panels_time
from voxtrail.query.buckets import auto_unit
from voxtrail.query.filters import Filters
from voxtrail.query.reads import Reader
from voxtrail.query.stats import clean


@dataclass(frozen=True)
class Panel:
    name: str
    title: str
    compute: Callable[[Reader], dict]

    def __call__(self, source: Any, filters: Filters) -> dict:
        """Compute this panel alone; ``source`` is a Store, an Engine or a Connection."""
        with _connection(source) as conn:
            return _finish(self.compute(Reader(conn, filters)))


_DEFS = (
    ("summary", "Summary", panels_dims.summary),
    ("daily", "Calls, success rate and latency per day", panels_time.daily),
    ("hourly", "Calls, success rate and latency per hour", panels_time.hourly),
    ("by_emotion", "Per emotion", panels_dims.by_emotion),
    ("by_text_length", "Latency by text length", panels_dims.by_text_length),
    ("latency_vs_length", "Latency against text length", panels_latency.latency_vs_length),
    ("heatmap", "Calls by weekday and hour", panels_time.heatmap),
    ("percentiles", "Latency percentiles", panels_latency.percentiles),
    ("rtf_audio", "Real-time factor and audio length", panels_time.rtf_audio),
    ("stages", "IndexTTS2 stage times", panels_time.stages),
    ("errors", "Top errors", panels_latency.errors),
    ("failure_rate", "Failure rate", panels_time.failure_rate),
    ("by_node", "Nodes", panels_dims.by_node),
    ("by_model", "Model versions (A/B)", panels_dims.by_model),
)

PANELS: dict[str, Panel] = {name: Panel(name, title, fn) for name, title, fn in _DEFS}
#: ``errors`` with each type's message prefixes: text, never among PANELS (so never served by name).
ERROR_MESSAGES = Panel("errors", "Top errors", panels_latency.error_messages)


class _connection:
    """A connection from a Store / Engine (opened and closed here) or a Connection (borrowed)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.owned: sa.Connection | None = None

    def __enter__(self) -> sa.Connection:
        if isinstance(self.source, sa.Connection):
            return self.source
        engine = self.source if isinstance(self.source, sa.Engine) else self.source.engine
        self.owned = engine.connect()
        return self.owned

    def __exit__(self, *exc) -> None:
        if self.owned is not None:
            self.owned.close()


def _finish(panel: dict) -> dict:
    panel["rows"] = [[clean(v) for v in row] for row in panel["rows"]]
    return panel


def dashboard(store: Any, filters: Filters, names: Iterable[str] | None = None, *,
              messages: bool = False) -> dict[str, Any]:
    """Every panel (or ``names``) for ``filters``, over one connection and shared reads;
    ``messages``: the errors panel with message prefixes (:data:`ERROR_MESSAGES`)."""
    wanted = list(PANELS) if names is None else list(names)
    chosen = {**PANELS, "errors": ERROR_MESSAGES} if messages else PANELS
    unknown = [n for n in wanted if n not in PANELS]
    if unknown:
        raise ValueError(f"unknown panel(s): {', '.join(unknown)} (known: {', '.join(PANELS)})")
    reader = Reader(None, filters)  # type: ignore[arg-type] - its connection comes after the prefetch
    if not isinstance(store, sa.Connection) and len(wanted) > 2:
        # Before this request takes a connection of its own: one that held a connection while
        # its prefetch waited for two more could, with the pool full of such requests, never
        # get them. Each thread holds at most one connection at a time.
        engine = store if isinstance(store, sa.Engine) else store.engine
        reader.prefetch(engine, _questions(filters, wanted))
    with _connection(store) as conn:
        reader.conn = conn
        panels = {name: _finish(chosen[name].compute(reader)) for name in wanted}
    return {
        "filters": filters.to_params(),
        "since": filters.since.isoformat(),
        "until": filters.until.isoformat(),
        "tz": filters.tz,
        "panels": panels,
    }


def _questions(filters: Filters, names: list[str]) -> list[tuple]:
    """The rollup reads the named panels will ask for, heaviest first (to prefetch them)."""
    unit = auto_unit(filters)
    wanted = set(names)
    plan = [
        ({"summary", "percentiles"}, ("latency", (), unit)),
        ({"by_node"}, ("latency", ("node",), None)),
        ({"by_model"}, ("latency", ("model", "model_version"), None)),
        ({"hourly", "heatmap"}, ("measures", ("status",), "hour")),
        ({"summary", "failure_rate", "rtf_audio", "stages"}, ("measures", ("status",), unit)),
        ({"daily"}, ("measures", ("status",), "day")),
        ({"by_emotion", "by_node", "by_model"}, ("measures", panels_dims.GROUPS, None)),
        ({"by_text_length"}, ("measures", ("status", "length_bucket"), None)),
        ({"errors"}, ("errors", (), None)),
    ]
    return [question for panels, question in plan if panels & wanted]


def filter_options(store: Any, filters: Filters) -> dict[str, list[str]]:
    """Values for each filter menu: what occurs on the days the view touches (any other filter)."""
    with _connection(store) as conn:
        return Reader(conn, filters).options()

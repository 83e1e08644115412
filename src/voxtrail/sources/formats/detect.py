"""Guess a file's format from its first bytes, by asking every registered format.

Each format judges its own shape (:meth:`Format.sniff`), so adding a format needs no change
here. Importing this module registers the built-in formats. A format whose ``sniff`` raises (a
bug) is taken as not recognising the file, so one format's bug cannot stop the others' files.
"""

from __future__ import annotations

import logging

from voxtrail.sources.formats import FORMATS, error_summary
from voxtrail.sources.formats import indextts, jsonl, text  # noqa: F401  (they register themselves)

log = logging.getLogger(__name__)

HEAD_LINES = 50
MIN_CONFIDENCE = 0.5
_failed_sniffs: set[str] = set()  # formats whose sniff raised, warned about once per process


def head_lines(head: bytes, limit: int = HEAD_LINES) -> list[str]:
    """The first ``limit`` non-blank lines; a last line cut off by the head's size is dropped."""
    text = head.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = text.split("\n")
    if len(lines) > 1 and not head.endswith(b"\n"):
        lines.pop()
    return [line.rstrip("\r") for line in lines if line.strip()][:limit]


def detect_format(head: bytes) -> str | None:
    """Name of the best-matching format, or None when no format is at least fairly sure."""
    lines = head_lines(head)
    if not lines:
        return None
    scores = {name: _confidence(name, lines) for name in FORMATS}
    best = max(scores, key=scores.__getitem__)
    return best if scores[best] >= MIN_CONFIDENCE else None


def _confidence(name: str, lines: list[str]) -> float:
    try:
        return float(FORMATS[name].sniff(lines))
    except Exception as exc:  # noqa: BLE001 - a bug in one format's sniff: it does not recognise the file
        if name not in _failed_sniffs:
            _failed_sniffs.add(name)
            log.warning("voxtrail: the %s format failed to examine a file's first lines (%s); taken as not %s",
                        name, error_summary(exc), name)
        return 0.0

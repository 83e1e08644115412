"""Guess a file's format from its first bytes, by asking every registered format.

Each format judges its own shape (:meth:`Format.sniff`), so adding a format needs no change
here. Importing this module registers the built-in formats.
"""

from __future__ import annotations

from voxtrail.sources.formats import FORMATS
from voxtrail.sources.formats import indextts, jsonl, text  # noqa: F401  (they register themselves)

HEAD_LINES = 50
MIN_CONFIDENCE = 0.5


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
    scores = {name: fmt.sniff(lines) for name, fmt in FORMATS.items()}
    best = max(scores, key=scores.__getitem__)
    return best if scores[best] >= MIN_CONFIDENCE else None

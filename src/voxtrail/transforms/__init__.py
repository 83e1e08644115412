"""Transforms: small functions applied to every batch, whatever its source, before the store.

Like structlog's processors, each is a plain function ``batch -> batch``; the chain is a list.
A transform may move events to ``batch.rejects`` with a reason, never drop them silently.
Privacy transforms (masking, encryption, hashing) belong here, so nothing unprotected is
ever persisted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from voxtrail.event import EventBatch
from voxtrail.transforms.mask import Masker, default_masker
from voxtrail.transforms.normalize import normalize

if TYPE_CHECKING:
    from voxtrail.config import Settings

Transform = Callable[[EventBatch], EventBatch]


def default_chain(settings: "Settings | None" = None, *, masker: Masker | None = None) -> list[Transform]:
    """normalize, then PII masking (docs/masking.md): from ``masker``, else from ``settings``'
    ``[mask]`` table, else the process's settings (:func:`default_masker`, built once)."""
    if masker is None:
        masker = default_masker() if settings is None else Masker.from_settings(settings)
    return [normalize, masker] if masker.enabled else [normalize]


def apply(chain: Iterable[Transform], batch: EventBatch) -> EventBatch:
    for transform in chain:
        batch = transform(batch)
    return batch

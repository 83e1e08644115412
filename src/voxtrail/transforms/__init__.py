"""Transforms: small functions applied to every batch, whatever its source, before the store.

Like structlog's processors, each is a plain function ``batch -> batch``; the chain is a list.
A transform may move events to ``batch.rejects`` with a reason, never drop them silently.
Privacy transforms (masking, encryption, hashing) belong here, so nothing unprotected is
ever persisted.
"""

from __future__ import annotations

from typing import Callable, Iterable

from voxtrail.event import EventBatch
from voxtrail.transforms.normalize import normalize

Transform = Callable[[EventBatch], EventBatch]


def default_chain() -> list[Transform]:
    return [normalize]


def apply(chain: Iterable[Transform], batch: EventBatch) -> EventBatch:
    for transform in chain:
        batch = transform(batch)
    return batch

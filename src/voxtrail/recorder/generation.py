"""One generation, end to end: ``with recorder.generation(...) as gen:`` or ``@recorder.generation(...)``.

Measures the generation (``latency_ms``) and its named stages, and records one event when it
ends: ``success``, or ``failed`` with the exception's type and message (the exception itself
propagates untouched). Inside a decorated function, :func:`current_generation` returns the
generation being recorded, so stages and late fields can be added without passing it around.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from voxtrail.event import FIELD_NAMES
from voxtrail.recorder.core import check_fields

if TYPE_CHECKING:
    from voxtrail.recorder.core import Recorder

log = logging.getLogger("voxtrail.recorder")

#: Stage names with a column of their own (``s2mel`` -> ``s2mel_ms``); others go to attributes.
STAGE_FIELDS = {n[:-3]: n for n in FIELD_NAMES if n.endswith("_ms") and n not in ("latency_ms", "audio_length_ms")}

_current: ContextVar["Generation | None"] = ContextVar("voxtrail_generation", default=None)


def current_generation() -> "Generation | None":
    """The generation being recorded in this thread / task, if any."""
    return _current.get()


def error_type(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class Generation:
    """Single use as a context manager; as a decorator, each call records its own generation."""

    def __init__(self, recorder: "Recorder", fields: dict[str, Any]):
        check_fields(fields)
        self.recorder = recorder
        self.fields = dict(fields)
        self.stages: dict[str, float] = {}
        self._t0: float | None = None
        self._started: datetime | None = None
        self._token: Token | None = None

    def set(self, **fields: Any) -> None:
        """Fields known only during the generation (``output_audio_url``, ``audio_length_ms``...)."""
        check_fields(fields)
        self.fields.update(fields)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; a stage entered several times adds up (one per text segment, say)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + (time.perf_counter() - t0) * 1000.0

    def __enter__(self) -> "Generation":
        if self._t0 is not None:
            raise RuntimeError("voxtrail: a generation is recorded once; call recorder.generation() again")
        self._started = datetime.now(timezone.utc)
        self._t0 = time.perf_counter()
        self._token = _current.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        elapsed_ms = (time.perf_counter() - self._t0) * 1000.0
        _current.reset(self._token)
        event = self._event(elapsed_ms, exc)
        if exc is None:
            self.recorder.record_event(event)
        else:
            try:
                self.recorder.record_event(event)
            except Exception:  # noqa: BLE001 - never replace the caller's exception with ours
                log.exception("voxtrail: could not record the failed generation")
        return False

    def _event(self, elapsed_ms: float, exc: BaseException | None) -> dict[str, Any]:
        """The event to record. Never raises for a value the caller gave: attributes that are not
        a dict are recorded as given (and become a reject naming them when shipped)."""
        event = dict(self.fields)
        event.setdefault("latency_ms", elapsed_ms)
        given = event.get("attributes")
        attributes = dict(given) if isinstance(given, Mapping) else {} if given is None else None
        extra_stages = {}
        for name, ms in self.stages.items():
            if name in STAGE_FIELDS:
                event.setdefault(STAGE_FIELDS[name], ms)
            else:
                extra_stages[name] = ms
        if attributes is not None:
            attributes.setdefault("started_at", self._started.isoformat())
            if extra_stages:
                stages = attributes.get("stages_ms")
                attributes["stages_ms"] = {**stages, **extra_stages} if isinstance(stages, Mapping) else extra_stages
            event["attributes"] = attributes
        if exc is not None:
            event["status"] = "failed"
            event.setdefault("error_type", error_type(exc))
            event.setdefault("error_message", str(exc))
        else:
            event.setdefault("status", "success")
        return event

    def __call__(self, func):
        fields = self.fields
        recorder = self.recorder

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def run_async(*args, **kwargs):
                with Generation(recorder, dict(fields)):
                    return await func(*args, **kwargs)
            return run_async

        @functools.wraps(func)
        def run(*args, **kwargs):
            with Generation(recorder, dict(fields)):
                return func(*args, **kwargs)
        return run

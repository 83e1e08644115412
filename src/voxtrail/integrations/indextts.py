"""Record every ``IndexTTS2.infer`` call (``indextts/infer_v2.py``) without touching its code.

::

    from indextts.infer_v2 import IndexTTS2
    from voxtrail import Recorder
    from voxtrail.integrations.indextts import instrument

    tts = instrument(IndexTTS2(cfg_path="checkpoints/config.yaml", model_dir="checkpoints"),
                     Recorder(db="postgresql://tts@db/tts"), node="gpu-1", model_version="2.0")

``instrument`` replaces ``infer`` on that one object; each call then records one event: its
settings (``emotion_control`` speaker / audio / vector / text, the 8-weight vector, ``emo_alpha``,
``emo_text``), the stage times and RTF the model prints (read with the same patterns as the
``indextts`` log format, from this call's own output only; the output still reaches the
console), the output path, SHA-256 of the output and of the reference audio, and a failure's
type and message (the exception propagates unchanged).

Hashing runs on the caller's thread after the model has finished: SHA-256 reads at well over
1 GB/s, so a few-second WAV (~100-500 KB) costs well under a millisecond next to seconds of
inference, and a reference audio is hashed once per (path, size, mtime). Pass
``hash_audio=False`` to skip it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import os
import threading
import time
from typing import Any

from voxtrail.event import EMOTION_VECTOR_LABELS
from voxtrail.integrations.stdout import captured_stdout
from voxtrail.recorder.core import check_fields
from voxtrail.recorder.generation import error_type
from voxtrail.sources.formats.indextts import DETECTED, SAVED, STAGE, VALUE

_VALUE_FIELDS = {"Total inference time": ("latency_ms", 1000.0), "Generated audio length": ("audio_length_ms", 1000.0),
                 "RTF": ("rtf", 1.0)}
_ATTRIBUTE_ARGS = ("emo_audio_prompt", "use_random", "interval_silence", "max_text_tokens_per_segment",
                   "stream_return", "more_segment_before")


def instrument(tts: Any, recorder, *, hash_audio: bool = True, **defaults: Any) -> Any:
    """Record each ``tts.infer`` call with ``recorder``; ``defaults`` are event fields for all
    of them (``node``, ``model_version``...; ``model`` defaults to ``IndexTTS2``). Returns ``tts``."""
    check_fields(defaults)
    defaults.setdefault("model", "IndexTTS2")
    original = tts.infer
    if getattr(original, "__voxtrail_original__", None) is not None:
        raise ValueError("this IndexTTS2 object is already instrumented")
    signature = inspect.signature(original)
    hasher = _AudioHasher() if hash_audio else None

    @functools.wraps(original)
    def infer(*args, **kwargs):
        call = _Call(recorder, defaults, signature.bind(*args, **kwargs), hasher)
        if call.arguments.get("stream_return"):
            return call.stream(original, args, kwargs)
        with captured_stdout() as printed:
            try:
                result = original(*args, **kwargs)
            except BaseException as exc:
                call.finish(printed, exc)
                raise
        call.finish(printed, None)
        return result

    infer.__voxtrail_original__ = original
    tts.infer = infer
    return tts


def uninstrument(tts: Any) -> None:
    """Undo :func:`instrument`."""
    original = getattr(tts.infer, "__voxtrail_original__", None)
    if original is None:
        return
    del tts.infer  # our instance attribute: the class's method shows through again
    if getattr(tts, "infer", None) != original:
        tts.infer = original


class _Call:
    """One ``infer`` call: what it was asked, what it printed, how it ended."""

    def __init__(self, recorder, defaults: dict, bound: inspect.BoundArguments, hasher: "_AudioHasher | None"):
        bound.apply_defaults()
        self.recorder = recorder
        self.defaults = defaults
        self.arguments = dict(bound.arguments)
        for name, param in bound.signature.parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD:  # **generation_kwargs: flatten
                self.arguments.update(self.arguments.pop(name, None) or {})
        self.hasher = hasher
        self.t0 = time.perf_counter()

    def stream(self, original, args, kwargs):
        """``stream_return=True``: the call returns a generator; record when it is exhausted."""
        def run():
            with captured_stdout() as printed:
                try:
                    yield from original(*args, **kwargs)
                except GeneratorExit as exc:
                    exc.args = exc.args or ("the stream was closed before its end",)
                    self.finish(printed, exc)
                    raise
                except BaseException as exc:
                    self.finish(printed, exc)
                    raise
            self.finish(printed, None)
        return run()

    def finish(self, printed: list[str], exc: BaseException | None) -> None:
        event = self._settings()
        event.update(_parse("".join(printed)))
        event.setdefault("latency_ms", (time.perf_counter() - self.t0) * 1000.0)
        if "emotion_vector" in event:
            vec = event["emotion_vector"]
            best = max(range(len(vec)), key=vec.__getitem__)
            if vec[best] > 0:
                event["emotion"] = EMOTION_VECTOR_LABELS[best]
        if exc is not None:
            event.update(status="failed", error_type=error_type(exc), error_message=str(exc))
        if self.hasher is not None:
            output = event.get("output_audio_url")
            if exc is None and output:
                event["output_audio_sha256"] = self.hasher.sha256(output, cache=False)
            ref = event.get("ref_audio_url")
            if ref:
                event["ref_audio_sha256"] = self.hasher.sha256(ref, cache=True)
        event = {k: v for k, v in event.items() if v is not None}
        self.recorder.record_event({**self.defaults, **event})

    def _settings(self) -> dict[str, Any]:
        a = self.arguments
        text = a.get("text")
        vector = a.get("emo_vector")
        if a.get("use_emo_text"):
            control = "text"
        elif vector is not None:
            control = "vector"
        elif a.get("emo_audio_prompt"):
            control = "audio"
        else:
            control = "speaker"
        event: dict[str, Any] = {
            "text_input": text if isinstance(text, str) else None,
            "text_length": len(text) if isinstance(text, str) else None,
            "ref_audio_url": _path(a.get("spk_audio_prompt")),
            "emotion_control": control,
            "emo_alpha": _float(a.get("emo_alpha")),
            "output_audio_url": _path(a.get("output_path")),
            "status": "success",
        }
        if control == "text":
            event["emotion_desc"] = a.get("emo_text") or text
        if vector is not None:
            try:
                event["emotion_vector"] = [float(x) for x in vector]
            except (TypeError, ValueError):
                event["emotion_vector"] = None
        attributes = {k: _jsonable(a[k]) for k in _ATTRIBUTE_ARGS if a.get(k) not in (None, False)}
        extra = {k: _jsonable(v) for k, v in a.items() if k not in _KNOWN_ARGS}
        if extra:
            attributes["generation_kwargs"] = extra
        if attributes:
            event["attributes"] = attributes
        return event


_KNOWN_ARGS = {"self", "spk_audio_prompt", "text", "output_path", "emo_alpha", "emo_vector", "use_emo_text",
               "emo_text", "verbose", *_ATTRIBUTE_ARGS}


def _parse(output: str) -> dict[str, Any]:
    """Fields from what ``infer`` printed (the lines the ``indextts`` log format reads)."""
    out: dict[str, Any] = {}
    for line in output.splitlines():
        if m := STAGE.match(line):
            out[f"{m.group(1)}_ms"] = float(m.group(2)) * 1000.0
        elif m := VALUE.match(line):
            name, scale = _VALUE_FIELDS[m.group(1)]
            out[name] = float(m.group(2)) * scale
        elif m := SAVED.match(line):
            out["output_audio_url"] = m.group(1)
        elif line.startswith(DETECTED):
            try:
                detected = ast.literal_eval(line[len(DETECTED):].strip())
                out["emotion_vector"] = [float(detected.get(k, 0.0)) for k in EMOTION_VECTOR_LABELS]
            except (ValueError, TypeError, SyntaxError, AttributeError, MemoryError, RecursionError):
                pass  # the vector stays unknown; the event is still recorded
    return out


def _path(value: Any) -> str | None:
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)[:200]


class _AudioHasher:
    """SHA-256 of audio files; reference audios are cached by (path, size, mtime)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def sha256(self, path: str, cache: bool) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None  # not a local file (a URL, or removed): nothing to hash
        key = (path, st.st_size, st.st_mtime_ns)
        if cache:
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
        try:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            return None
        if cache:
            with self._lock:
                if len(self._cache) > 1024:
                    self._cache.clear()
                self._cache[key] = digest
        return digest

"""Capture what one call prints, per thread, while still passing it through to the real stdout.

IndexTTS2 reports its stage times only with ``print``. ``sys.stdout`` is wrapped once by a
:class:`Tee` that copies each write to the buffers of the *current thread's* active captures
and always forwards it, so concurrent generations in other threads neither leak into each
other's capture nor lose their console output.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Iterator

_install_lock = threading.Lock()


class Tee:
    def __init__(self, real):
        self.real = real
        self.local = threading.local()

    def write(self, text: str) -> int:
        for buffer in getattr(self.local, "buffers", ()):
            buffer.append(text)
        return self.real.write(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.real.flush()

    def __getattr__(self, name: str):  # encoding, isatty, fileno, buffer...
        return getattr(self.real, name)


def _tee() -> Tee:
    with _install_lock:
        current = sys.stdout
        if not isinstance(current, Tee):
            current = sys.stdout = Tee(current)
        return current


@contextmanager
def captured_stdout() -> Iterator[list[str]]:
    """A list that collects what this thread prints inside the block (nested blocks each get it)."""
    tee = _tee()
    buffers = getattr(tee.local, "buffers", None)
    if buffers is None:
        buffers = tee.local.buffers = []
    buffer: list[str] = []
    buffers.append(buffer)
    try:
        yield buffer
    finally:
        buffers.remove(buffer)

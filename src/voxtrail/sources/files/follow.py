"""Follow mode: keep importing as files grow, rotate and appear.

Each pass is an ordinary incremental import, so following inherits every guarantee of
``import`` (exactly once, rotation, quarantine). inotify (through watchdog) wakes a pass as soon
as a file changes; a timer wakes it anyway, for filesystems that send no events (NFS, some
containers), so a line is stored within about a second of being written either way.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from typing import Callable, Iterable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from voxtrail.sources.files.importer import Importer, Summary, expand_paths
from voxtrail.store import StoreError

log = logging.getLogger(__name__)
MAX_BACKOFF = 30.0


class _Wake(FileSystemEventHandler):
    def __init__(self, patterns: list[str], wake: threading.Event):
        self.patterns = [os.path.abspath(p) for p in patterns]
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        if any(fnmatch.fnmatch(os.path.abspath(str(p)), pat) for p in paths if p for pat in self.patterns):
            self.wake.set()


def follow(
    importer: Importer,
    patterns: Iterable[str],
    *,
    stop: threading.Event,
    poll_interval: float = 1.0,
    on_pass: Callable[[Summary], None] = lambda s: None,
    on_error: Callable[[Exception], None] = lambda e: None,
) -> None:
    """Import changed files until ``stop`` is set. A database outage is waited out, not fatal:
    the files keep the lines, and the checkpoints say where to resume."""
    patterns = list(patterns)
    wake = threading.Event()
    observer = _start_observer(patterns, wake)
    seen: dict[str, tuple] = {}
    backoff = poll_interval
    try:
        while not stop.is_set():
            try:
                changed = [p for p in expand_paths(patterns, allow_missing=True) if _changed(p, seen)]
                if changed:
                    on_pass(importer.run(changed))
                backoff = poll_interval
            except StoreError as exc:
                on_error(exc)
                seen.clear()  # retry every file once the store is back
                backoff = min(backoff * 2, MAX_BACKOFF)
                stop.wait(backoff)
                continue
            wake.wait(poll_interval)
            wake.clear()
    finally:
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)


def _changed(path: str, seen: dict[str, tuple]) -> bool:
    """Skip files whose inode, size and mtime are as on the previous pass."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        seen.pop(path, None)
        return False
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    if seen.get(path) == key:
        return False
    seen[path] = key
    return True


def _start_observer(patterns: list[str], wake: threading.Event):
    directories = {os.path.dirname(os.path.abspath(p)) or "." for p in patterns}
    observer = Observer()
    handler = _Wake(patterns, wake)
    try:
        for directory in directories:
            if os.path.isdir(directory):
                observer.schedule(handler, directory, recursive=False)
        observer.start()
    except OSError as exc:  # e.g. inotify watch limit reached: polling still works
        log.warning("file notifications unavailable (%s); polling every second", exc)
        return None
    return observer

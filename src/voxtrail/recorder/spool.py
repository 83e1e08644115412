"""The on-disk spool: where every recorded event lives until the store has it.

Layout (directory 0700, files 0600)::

    <spool_dir>/
      w-<host>-<pid>-<random>/      one sub-spool per live Recorder (process)
        lock                        flock(LOCK_EX) held by its owner for its whole life
        000000000001.seg ...        append-only segments of framed records
        acked                       "<segment> <offset>": everything before it is stored
      rejected/                     events a collector refused (HTTP 4xx), with the reason

A frame is ``<u32 length><u32 crc32(payload)><payload>`` (little endian), the payload one
orjson-encoded event. A frame is written with one ``write`` on an O_APPEND descriptor, so once
``append`` returns the bytes are in the kernel: a process crash (even SIGKILL) loses nothing,
and only a power failure can lose what was not yet fsynced. A crash can still leave a torn
frame at a segment's end (power loss mid-write): the reader stops at the first frame whose
length runs past the end of the file or whose CRC does not match, and never ships it.

Each process writes its own sub-spool (so gunicorn workers never contend for a file) and holds
its lock; a sub-spool whose lock is free belongs to a dead process and is adopted: its events
are shipped by whoever takes the lock, then the directory is removed. A sub-spool is created
under a hidden name and renamed only once its lock is held, so nobody adopts a live one.

Whatever is adopted is shipped with the Recorder's credentials, so a spool directory is used only
if no other local user can have written into it (:func:`prepare_spool_dir`): it, every directory
above it and everything in it must belong to the user running the Recorder or to root.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import secrets
import socket
import stat
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from voxtrail import localfs
from voxtrail.localfs import UntrustedPath

log = logging.getLogger("voxtrail.recorder")

FRAME = struct.Struct("<II")
SEGMENT_SUFFIX = ".seg"
FSYNC_POLICIES = ("always", "interval", "never")


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) 0700; tighten an existing directory we own."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)


def prepare_spool_dir(path: Path) -> None:
    """Make ``path`` a private spool directory, or refuse it with :class:`UntrustedPath`.

    As ssh's StrictModes: the directory and every directory above it must belong to this user or
    root, none writable by group or others (a sticky one such as /tmp excepted above), and so must
    everything in it, one level into each sub-spool: another user who could write there could
    plant a dead writer's sub-spool, and its forged events would be shipped with our credentials.
    A directory of ours that group or others could enter is tightened to 0700 first.
    """
    fix = "use a spool directory of your own (spool_dir=, VOXTRAIL_SPOOL_DIR)"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.stat(path)
    if not _directory(st):
        raise UntrustedPath(f"spool directory {path} is not a directory: {fix}")
    if not localfs.trusted_uid(st.st_uid):
        raise UntrustedPath(f"spool directory {path} belongs to {localfs.who(st.st_uid)}, not to "
                            f"{localfs.who(os.geteuid())} who runs the Recorder: another user could plant events "
                            f"in it; {fix}")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    localfs.check_parents(path, "spool directory")
    for entry, entry_st in _entries(path, depth=2):
        if not localfs.trusted_uid(entry_st.st_uid):
            raise UntrustedPath(f"spool directory {path} holds {entry.relative_to(path)}, which belongs to "
                                f"{localfs.who(entry_st.st_uid)}: another user has written into it; remove what "
                                f"is not yours after looking at it, or {fix}")
        if _directory(entry_st) and entry_st.st_mode & 0o022:
            raise UntrustedPath(f"spool directory {path} holds {entry.relative_to(path)}, which group or others "
                                f"can write to (mode {stat.S_IMODE(entry_st.st_mode):04o}); remove it after looking at "
                                f"it, or {fix}")


def _directory(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode)


def _entries(directory: Path, depth: int) -> Iterator[tuple[Path, os.stat_result]]:
    """(path, lstat) of what is in ``directory``, ``depth`` levels down (symbolic links not followed)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        path = directory / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:  # removed meanwhile (a sub-spool delivered by its owner)
            continue
        yield path, st
        if depth > 1 and _directory(st):
            yield from _entries(path, depth - 1)


def _orphan_trusted(path: Path) -> bool:
    """A sub-spool this process may adopt: a real directory of this user's (or root's) that
    nobody else can write to. :func:`prepare_spool_dir` checked the spool when the Recorder
    started; this catches what appeared since."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if _directory(st) and localfs.trusted_uid(st.st_uid) and not st.st_mode & 0o022:
        return True
    if path.name not in _refused_orphans:
        _refused_orphans.add(path.name)
        log.warning("voxtrail: not adopting %s: it belongs to %s (mode %04o), not to this user; its events are "
                    "never shipped", path, localfs.who(st.st_uid), stat.S_IMODE(st.st_mode))
    return False


_refused_orphans: set[str] = set()


def segment_name(number: int) -> str:
    return f"{number:012d}{SEGMENT_SUFFIX}"


def segment_numbers(directory: Path) -> list[int]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(n[: -len(SEGMENT_SUFFIX)]) for n in names if n.endswith(SEGMENT_SUFFIX) and n[:-4].isdigit())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def try_lock(path: Path, create: bool = False) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if someone else holds it / it is gone."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class SubSpool:
    """One sub-spool directory whose lock this process holds (its own, or an adopted orphan)."""

    def __init__(self, path: Path, lock_fd: int):
        self.path = path
        self.lock_fd = lock_fd
        self.name = path.name

    @classmethod
    def create(cls, spool_dir: Path) -> "SubSpool":
        name = f"w-{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(4)}"
        hidden = spool_dir / f".{name}"
        hidden.mkdir(mode=0o700)
        fd = try_lock(hidden / "lock", create=True)
        assert fd is not None  # nobody else knows this directory yet
        final = spool_dir / name
        os.rename(hidden, final)
        return cls(final, fd)

    @classmethod
    def orphans(cls, spool_dir: Path, own: set[str]) -> Iterator["SubSpool"]:
        """Sub-spools whose owner is gone: their lock could be taken (and now is ours)."""
        try:
            names = sorted(os.listdir(spool_dir))
        except FileNotFoundError:
            return
        for name in names:
            if not name.startswith("w-") or name in own or not _orphan_trusted(spool_dir / name):
                continue
            fd = try_lock(spool_dir / name / "lock")
            if fd is None:
                continue
            if not (spool_dir / name).is_dir():  # removed by its previous adopter meanwhile
                os.close(fd)
                continue
            yield cls(spool_dir / name, fd)

    def size(self) -> int:
        total = 0
        for n in segment_numbers(self.path):
            try:
                total += (self.path / segment_name(n)).stat().st_size
            except FileNotFoundError:
                continue  # delivered and deleted by the shipper since it was listed: no longer counts
        return total

    def remove(self) -> None:
        """Delete the drained directory, then let go of its lock."""
        for entry in os.listdir(self.path):
            if entry != "lock":
                os.unlink(self.path / entry)
        os.unlink(self.path / "lock")
        os.rmdir(self.path)
        self.release()

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


class SpoolFull(Exception):
    """The spool is at ``max_spool_bytes``: the event was not written (the Recorder counts it
    as dropped and warns)."""


class _Segment:
    """A segment being written: preallocated, then filled through a shared memory map.

    Copying a frame into the map is a ``memcpy`` into the page cache: no system call, and the
    caller keeps the GIL (a ``write()`` would hand it to any busy thread for up to 5 ms). The
    pages belong to the kernel, so a process crash or SIGKILL loses nothing. The space is
    reserved up front (``posix_fallocate``): a full disk is an error when a segment is opened,
    never a SIGBUS while writing into the map.
    """

    def __init__(self, path: Path, size: int):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _reserve(self.fd, size)
            self.map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            os.unlink(path)
            raise
        self.size = size

    def finish(self, end: int) -> int:
        """Unmap and cut the file to its frames; returns the fd (still open) for a final fsync."""
        self.map.close()
        os.ftruncate(self.fd, end)
        return self.fd


def _reserve(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        zeros = bytes(1 << 20)  # a file system without fallocate: write the zeros ourselves
        for offset in range(0, size, len(zeros)):
            os.pwrite(fd, zeros[: min(len(zeros), size - offset)], offset)


class SpoolWriter:
    """Appends frames to the segments of this process's sub-spool (thread-safe, caller's thread).

    The live segment is preallocated and padded with zeros past its last frame; a reader of a
    dead writer's segment stops at the padding (a zero header), and a finished segment is cut
    to its frames.
    """

    def __init__(self, sub: SubSpool, *, fsync: str, segment_bytes: int, max_bytes: int):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        self.sub = sub
        self.fsync = fsync
        # Only finished segments are deleted once shipped: keep them small next to the bound,
        # so that a spool whose events are all delivered never looks full.
        self.segment_bytes = max(1, min(segment_bytes, max_bytes // 4))
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.segment = 0
        self.seg: _Segment | None = None
        self.end = 0  # bytes of the current segment that are complete frames
        self.spooled_bytes = sub.size()
        self.dirty = False
        self.retired: list[int] = []  # finished segments' fds, for the next sync() to flush and close
        self.frames = 0  # appended by this writer
        self._open_segment(1, self.segment_bytes)

    @property
    def fd(self) -> int:
        return self.seg.fd if self.seg is not None else -1

    def _open_segment(self, number: int, size: int) -> None:
        new = _Segment(self.sub.path / segment_name(number), size)
        old, old_end = self.seg, self.end
        self.seg, self.segment, self.end = new, number, 0
        if old is None:
            if self.fsync != "never":
                _fsync_dir(self.sub.path)
            return
        fd = old.finish(old_end)
        if self.fsync == "always":
            _fsync_dir(self.sub.path)
            os.fsync(fd)
            os.close(fd)
        elif self.fsync == "interval":
            # The background sync makes the finished segment and the new directory entry
            # durable, so that the caller never waits on a disk flush.
            self.retired.append(fd)
            self.dirty = True
        else:
            os.close(fd)

    def append(self, payload: bytes) -> None:
        """Write one frame; raises :class:`SpoolFull` at the bound (nothing written)."""
        frame = FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        n = len(frame)
        with self.lock:
            if self.spooled_bytes + n > self.max_bytes:
                raise SpoolFull
            if self.end + n > self.seg.size:
                self._open_segment(self.segment + 1, max(self.segment_bytes, n))
            start = self.end
            self.seg.map[start: start + n] = frame
            self.end = start + n
            self.spooled_bytes += n
            self.frames += 1
            if self.fsync == "always":
                os.fdatasync(self.seg.fd)
            else:
                self.dirty = True

    def position(self) -> tuple[int, int]:
        """(segment, end): what a reader of the live sub-spool may read."""
        with self.lock:
            return self.segment, self.end

    def sync(self) -> None:
        """fsync what was appended since the last call (the ``interval`` policy's timer calls it).

        ``fdatasync`` on the file writes back the pages dirtied through the map too."""
        with self.lock:
            if not self.dirty or self.seg is None:
                return
            self.dirty = False
            fd, retired, self.retired = self.seg.fd, self.retired, []
        for old in retired:
            os.fsync(old)
            os.close(old)
        if retired:
            _fsync_dir(self.sub.path)
        os.fdatasync(fd)

    def forget(self, nbytes: int) -> None:
        with self.lock:
            self.spooled_bytes -= nbytes

    def close(self) -> None:
        self.sync()
        with self.lock:
            if self.seg is not None:
                fd = self.seg.finish(self.end)
                if self.fsync != "never":
                    os.fsync(fd)
                os.close(fd)
                self.seg = None


@dataclass
class Chunk:
    """Frames read from one segment: payloads, each frame's offset, and where reading stopped."""

    segment: int
    offsets: list[int]
    payloads: list[bytes]
    end: int
    torn: int = 0  # bytes after ``end`` that are not a valid frame (only at a dead writer's tail)


def read_frames(path: Path, start: int, limit: int | None, max_frames: int, max_bytes: int = 8 << 20) -> Chunk:
    """Valid frames of a segment from ``start`` up to ``limit`` (None: read to the end of the file,
    which is only done for segments nobody writes any more: trailing garbage is then a torn tail)."""
    segment = int(path.name[: -len(SEGMENT_SUFFIX)])
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        stop_at = size if limit is None else min(limit, size)
        f.seek(start)
        data = f.read(min(max_bytes, stop_at - start))
    offsets: list[int] = []
    payloads: list[bytes] = []
    pos = 0
    n = len(data)
    header = FRAME.size
    unpack = FRAME.unpack_from
    crc32 = zlib.crc32
    bad = False
    while len(payloads) < max_frames:
        if pos + header > n:
            bad = start + n == stop_at and pos < n  # a header cut short at the end
            break
        length, crc = unpack(data, pos)
        if length == 0 and crc == 0:  # a dead writer's preallocated padding: no more frames
            bad = bool(data[pos:].strip(b"\0"))
            break
        end = pos + header + length
        if end > n:
            if start + end > stop_at:
                bad = True  # runs past the end: cut short
            elif pos == 0:  # one frame larger than a read: read it whole
                return read_frames(path, start, limit, max_frames, max_bytes=end)
            break
        payload = data[pos + header: end]
        if crc32(payload) != crc:
            bad = True
            break
        offsets.append(start + pos)
        payloads.append(payload)
        pos = end
    # Only a segment nobody writes any more is read to its end (limit None); a bad frame there is
    # a torn tail, and everything from it on is skipped, never shipped.
    torn = len(data[pos:].rstrip(b"\0")) if bad and limit is None else 0
    return Chunk(segment, offsets, payloads, start + pos, torn)


class AckFile:
    """The persistent position up to which a sub-spool's events are in the store."""

    def __init__(self, directory: Path, durable: bool):
        self.path = directory / "acked"
        self.durable = durable

    def load(self) -> tuple[int, int]:
        try:
            segment, offset = self.path.read_text().split()
            return int(segment), int(offset)
        except FileNotFoundError:
            return 0, 0
        except ValueError:
            # A damaged ack file (power loss during a non-durable write): start over; the store
            # drops what it already has by request_id, so re-shipping is harmless.
            log.warning("voxtrail: %s is damaged; re-shipping this spool from its start", self.path)
            return 0, 0

    def save(self, segment: int, offset: int) -> None:
        tmp = self.path.with_name("acked.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"{segment} {offset}\n".encode())
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

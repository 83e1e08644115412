"""Which stream is this file? Recognising a log across renames, truncation and inode reuse.

A *stream* is the content of one log from its first byte on, wherever it lives now: `tts.log`
today, `tts.log.1` after rotation, `tts.log.2.gz` later. Names and inodes lie (rotation renames,
copytruncate keeps the inode, a new file may get a freed inode), so a stream is recognised by
its content: a fingerprint of its first bytes (like Vector's checksum fingerprinting), plus a
hash of the bytes just before the checkpoint, which catches a file rewritten with the same
beginning. The checkpoint stores both with the offset.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from voxtrail.sources.files import reader
from voxtrail.store import Checkpoint

#: Bytes of a file's head that identify it. Long enough that two logs almost never share it
#: (their first lines carry timestamps); a shorter file is identified by all it has so far.
FINGERPRINT_BYTES = 1024
#: Bytes before the checkpoint offset whose hash must still match to resume reading.
TAIL_BYTES = reader.EDGE_BYTES


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stream_id_for(head: bytes) -> str:
    return sha256(head)[:16]


@dataclass
class Resolution:
    """Where to start reading a file, and under which stream."""

    checkpoint: Checkpoint  # the stream's checkpoint (a fresh one at offset 0 for a new stream)
    is_new: bool
    reason: str  # "new", "resumed", "rewritten": for logs and summaries


def resolve(path: str, head: bytes, known: dict[str, Checkpoint], fmt: str) -> Resolution | None:
    """Match ``path`` (whose first bytes are ``head``) with a known stream, or start a new one.

    ``known`` maps stream ids to checkpoints. Returns None for an empty file: it has no
    identity yet, and nothing to import.
    """
    if not head:
        return None
    candidates = _matches(head, known.values())
    for cp in candidates:
        if _continues(path, cp):
            _grow_fingerprint(cp, head)
            cp.path = path
            return Resolution(cp, False, "resumed")
    if not candidates:
        return Resolution(_new_checkpoint(path, head, stream_id_for(head), fmt), True, "new")
    # Same beginning as streams already read, but none of them continues here: the file was
    # truncated and rewritten (a service restarted with `> tts.log` prints the same banner).
    # It is a new stream; its id must differ from every earlier one with this beginning.
    generation = len(candidates)
    while (new_id := sha256(head[: identity_len(head)] + b"\0" + str(generation).encode())[:16]) in known:
        generation += 1
    return Resolution(_new_checkpoint(path, head, new_id, fmt), True, "rewritten")


def identity_len(head: bytes) -> int:
    return min(len(head), FINGERPRINT_BYTES)


def tail_hash(data_before_offset: bytes) -> str:
    return sha256(data_before_offset[-TAIL_BYTES:])


def _matches(head: bytes, checkpoints) -> list[Checkpoint]:
    """Streams whose fingerprint this head has, most specific and furthest read first."""
    found = [cp for cp in checkpoints if cp.fp_len <= len(head) and sha256(head[: cp.fp_len]) == cp.fp_hash]
    return sorted(found, key=lambda cp: (cp.fp_len, cp.offset), reverse=True)


def _grow_fingerprint(cp: Checkpoint, head: bytes) -> None:
    """A file that has grown past what identified it is identified by more from now on."""
    if cp.fp_len < identity_len(head):
        cp.fp_len = identity_len(head)
        cp.fp_hash = sha256(head[: cp.fp_len])


def _continues(path: str, cp: Checkpoint) -> bool:
    """Is the content before the checkpoint still what was read? (Size first: cheap.)"""
    size = reader.content_size(path)
    if size is not None and size < cp.offset:
        return False
    start = max(0, cp.offset - TAIL_BYTES)
    try:
        with reader.open_content(path) as f:
            before = reader.read_range(f, start, cp.offset - start)
    except reader.TruncatedCompressedFile:
        return False
    return len(before) == cp.offset - start and tail_hash(before) == cp.tail_hash


def _new_checkpoint(path: str, head: bytes, stream_id: str, fmt: str) -> Checkpoint:
    fp_len = identity_len(head)
    start = reader.first_line_start(head)
    return Checkpoint(
        stream_id=stream_id,
        fp_len=fp_len,
        fp_hash=sha256(head[:fp_len]),
        path=path,
        offset=start,
        tail_hash=tail_hash(head[:start]),
        format=fmt,
        state={},
    )

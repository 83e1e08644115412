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
TAIL_BYTES = 64


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
    match = _best_match(head, known.values())
    if match is None:
        return Resolution(_new_checkpoint(path, head, stream_id_for(head), fmt), True, "new")
    if not _continues(path, match):
        # Same beginning, different content up to the checkpoint: the file was truncated and
        # rewritten. It is a new stream, whose id must differ from the old one's.
        new_id = sha256((match.stream_id + ":" + match.fp_hash + ":" + str(match.offset)).encode())[:16]
        if new_id in known:
            return Resolution(known[new_id], False, "resumed")
        return Resolution(_new_checkpoint(path, head, new_id, fmt), True, "rewritten")
    if match.fp_len < min(len(head), FINGERPRINT_BYTES):
        # The file has grown past what identified it: identify it by more from now on.
        match.fp_len = min(len(head), FINGERPRINT_BYTES)
        match.fp_hash = sha256(head[: match.fp_len])
    match.path = path
    return Resolution(match, False, "resumed")


def tail_hash(data_before_offset: bytes) -> str:
    return sha256(data_before_offset[-TAIL_BYTES:])


def _best_match(head: bytes, checkpoints) -> Checkpoint | None:
    best: Checkpoint | None = None
    for cp in checkpoints:
        if cp.fp_len <= len(head) and sha256(head[: cp.fp_len]) == cp.fp_hash:
            if best is None or (cp.fp_len, cp.offset) > (best.fp_len, best.offset):
                best = cp
    return best


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
    fp_len = min(len(head), FINGERPRINT_BYTES)
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

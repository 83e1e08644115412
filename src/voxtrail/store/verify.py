"""Walk the hash chain (store/chain.py) and report the first broken link; export checkpoints.

Verification reads the rows in id order next to the links in sequence order, so memory stays
flat on any size of table. For every link it recomputes each row's hash from the row's content
(decrypting encrypted fields: the hash covers plaintext) and its predecessor, then the link's
digest over all its rows' hashes, including those retention removed (kept as gaps), then the
link's own hash and its tie to the previous link. A checkpoint taken earlier pins one link's
hash: since each link covers the one before, matching it proves nothing before was rewritten.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import orjson
import polars as pl
import sqlalchemy as sa

from voxtrail.event import FIELDS_BY_NAME, polars_schema
from voxtrail.store import chain, state
from voxtrail.store.schema import chain_gaps, chain_links, tts_events

CHECKPOINT_FORMAT = "voxtrail-checkpoint/1"
#: Fields that may hold ciphertext (whatever the configuration is today).
ENCRYPTABLE = ("ref_audio_url", "text_input", "output_audio_url")


class VerifyError(Exception):
    """Verification could not run (not a broken chain): e.g. encrypted rows and no keys."""


@dataclass
class Problem:
    message: str
    row_id: int | None = None
    link_seq: int | None = None


@dataclass
class Report:
    database_id: str
    links: int = 0
    rows_checked: int = 0
    rows_purged: int = 0
    rows_before_chain: int = 0
    head_seq: int = 0
    head_hash: str = ""
    head_last_id: int = 0
    problem: Problem | None = None
    checkpoint: dict | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def database_id(conn: sa.Connection) -> str:
    value = state.load(conn, "chain")
    if value is None:
        raise VerifyError("this database has no chain state: it was not created by voxtrail 0.5 or later")
    return value["database_id"]


def verify(engine: sa.Engine, keyring=None, *, checkpoint: dict | None = None, batch: int = 20_000,
           progress: Callable[[int], None] | None = None) -> Report:
    with engine.connect() as conn:
        report = Report(database_id(conn))
        if checkpoint is not None:
            _check_checkpoint_shape(checkpoint, report.database_id)
        max_id = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(tts_events.c.id), 0))).scalar_one())
        gaps = _gaps_by_link(conn)
        walker = _Walker(conn, keyring, report, gaps, batch, max_id, progress)
        try:
            walker.run(checkpoint)
        except _Tampered as exc:
            report.problem = Problem(f"an encrypted value does not authenticate, so it was altered or moved: {exc}")
    return report


def _check_checkpoint_shape(cp: dict, db_id: str) -> None:
    if cp.get("format") != CHECKPOINT_FORMAT:
        raise VerifyError(f"not a voxtrail checkpoint (format {cp.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
    body = {k: v for k, v in cp.items() if k != "checksum"}
    if cp.get("checksum") != _checksum(body):
        raise VerifyError("the checkpoint's checksum does not match its content: it was altered or truncated")
    if cp.get("database_id") != db_id:
        raise VerifyError(f"the checkpoint is for database {cp.get('database_id')}, this database is {db_id}")


def _checksum(body: dict) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def make_checkpoint(report: Report, where: str) -> dict:
    """What a third party keeps: the head link's hash, for this database, with a checksum."""
    body = {
        "format": CHECKPOINT_FORMAT,
        "database_id": report.database_id,
        "database": where,
        "seq": report.head_seq,
        "last_id": report.head_last_id,
        "link_hash": report.head_hash,
        "taken_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return {**body, "checksum": _checksum(body)}


def _gaps_by_link(conn: sa.Connection) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    rows = conn.execute(sa.select(chain_gaps).order_by(chain_gaps.c.link_seq, chain_gaps.c.first_id)).mappings()
    for row in rows:
        out.setdefault(int(row["link_seq"]), []).append(dict(row))
    return out


class _Walker:
    def __init__(self, conn, keyring, report: Report, gaps, batch: int, max_id: int, progress) -> None:
        self.conn, self.keyring, self.report, self.gaps = conn, keyring, report, gaps
        self.batch, self.max_id, self.progress = batch, max_id, progress
        self.rows: _Peekable | None = None

    def fail(self, message: str, row_id: int | None = None, link_seq: int | None = None) -> None:
        self.report.problem = Problem(message, row_id, link_seq)

    def run(self, checkpoint: dict | None) -> None:
        prev: chain.Link | None = None
        for link in _links(self.conn):
            if prev is None:
                if not self._genesis(link):
                    return
            elif not self._link(link, prev):
                return
            prev = link
            self.report.links += 1
            self.report.head_seq, self.report.head_hash, self.report.head_last_id = link.seq, link.link_hash, link.last_id
            if checkpoint is not None and link.seq == checkpoint["seq"] and link.link_hash != checkpoint["link_hash"]:
                return self.fail(f"link {link.seq} differs from the checkpoint taken {checkpoint['taken_at']}: "
                                 "the chain was rewritten before that point", link_seq=link.seq)
        if prev is None:
            return self.fail("the chain has no links: voxtrail_chain was emptied")
        stray = self._rows().peek()
        if stray is not None and stray["id"] <= self.max_id:
            return self.fail(f"row id {stray['id']} (request_id {stray['request_id']!r}) is in no link: it was "
                             "inserted behind voxtrail's back", row_id=stray["id"])
        if checkpoint is not None and checkpoint["seq"] > prev.seq:
            self.fail(f"the chain ends at link {prev.seq} but the checkpoint has link {checkpoint['seq']}: "
                      "links (and their rows) were removed", link_seq=prev.seq)

    def _genesis(self, link: chain.Link) -> bool:
        if link.seq != 1 or link.prev_hash != chain.ZERO or link.link_hash != link.expected_hash:
            self.fail("the genesis link (seq 1) was altered", link_seq=link.seq)
            return False
        self.report.rows_before_chain = link.row_count
        self.rows = _Peekable(self._stream(link.last_id))
        return True

    def _rows(self) -> "_Peekable":
        assert self.rows is not None
        return self.rows

    def _link(self, link: chain.Link, prev: chain.Link) -> bool:
        if link.seq != prev.seq + 1:
            self.fail(f"links {prev.seq + 1}..{link.seq - 1} are missing", link_seq=link.seq)
            return False
        if link.prev_hash != prev.link_hash or link.link_hash != link.expected_hash:
            self.fail(f"link {link.seq} (ids {link.first_id}..{link.last_id}) was altered", link_seq=link.seq)
            return False
        rows = self._rows()
        nxt = rows.peek()
        if nxt is not None and nxt["id"] < link.first_id:
            self.fail(f"row id {nxt['id']} (request_id {nxt['request_id']!r}) is in no link: it was inserted "
                      "behind voxtrail's back", row_id=nxt["id"])
            return False
        return self._link_rows(link)

    def _link_rows(self, link: chain.Link) -> bool:
        rows, gaps = self._rows(), list(self.gaps.get(link.seq, []))
        hashes: list[str] = []
        prev_rid: str | None = None
        count = 0
        while True:
            nxt = rows.peek()
            in_link = nxt is not None and nxt["id"] <= link.last_id
            if gaps and (not in_link or gaps[0]["first_id"] < nxt["id"]):
                gap = gaps.pop(0)
                hashes.append(gap["row_hashes"])
                prev_rid = gap["last_request_id"]
                count += int(gap["row_count"])
                self.report.rows_purged += int(gap["row_count"])
                continue
            if not in_link:
                break
            row = rows.next()
            if chain.row_hash_of(row["content"], prev_rid) != row["row_hash"]:
                self.fail(f"row id {row['id']} (request_id {row['request_id']!r}) does not match its hash: the row "
                          "was changed, or a row before it in the same write was deleted or inserted",
                          row_id=row["id"], link_seq=link.seq)
                return False
            hashes.append(row["row_hash"])
            prev_rid = row["request_id"]
            count += 1
            self.report.rows_checked += 1
        if link.purged_at is not None and count == 0:
            self.report.rows_purged += link.row_count
            return True
        if count != link.row_count:
            self.fail(f"link {link.seq} (ids {link.first_id}..{link.last_id}) was written with {link.row_count} rows; "
                      f"{count} are there or accounted for by retention: rows were deleted or inserted",
                      link_seq=link.seq)
            return False
        if chain.digest(hashes) != link.digest:
            self.fail(f"the rows of link {link.seq} (ids {link.first_id}..{link.last_id}) are not those written: "
                      "rows were deleted, inserted or reordered", link_seq=link.seq)
            return False
        return True

    def _stream(self, after_id: int) -> Iterator[dict]:
        # JSON columns are read as text and decoded here: a value the driver cannot decode (written
        # behind voxtrail's back) is a changed row, not a crash.
        columns = [tts_events.c.id, tts_events.c.row_hash,
                   *(sa.cast(tts_events.c[name], sa.Text).label(name) if FIELDS_BY_NAME[name].kind == "json"
                     else tts_events.c[name] for name in chain.CONTENT_FIELDS)]
        cursor = after_id
        while True:
            rows = self.conn.execute(
                sa.select(*columns).where(tts_events.c.id > cursor).order_by(tts_events.c.id).limit(self.batch)
            ).all()
            if not rows:
                return
            yield from self._contents(rows)
            cursor = rows[-1][0]
            if self.progress is not None:
                self.progress(len(rows))

    def _contents(self, rows: list) -> list[dict]:
        names = ["id", "row_hash", *chain.CONTENT_FIELDS]
        columns: dict[str, list] = {n: [r[i] for r in rows] for i, n in enumerate(names)}
        for name in chain.CONTENT_FIELDS:
            if FIELDS_BY_NAME[name].kind == "json":
                columns[name] = [_stored_json(v) for v in columns[name]]
        schema = {"id": pl.Int64, "row_hash": pl.Utf8, **polars_schema(chain.CONTENT_FIELDS)}
        frame = pl.DataFrame(columns, schema=schema)
        frame = self._decrypt(frame)
        content = chain.content_texts(frame)
        return [{"id": i, "request_id": r, "row_hash": h, "content": c}
                for i, r, h, c in zip(columns["id"], columns["request_id"], columns["row_hash"], content)]

    def _decrypt(self, frame: pl.DataFrame) -> pl.DataFrame:
        from voxtrail.transforms.encrypt import DecryptionError, decrypt_frame

        encrypted = [f for f in ENCRYPTABLE if frame[f].str.starts_with("vx1:").any()]
        if not encrypted:
            return frame
        if self.keyring is None:
            raise VerifyError(f"rows hold encrypted {', '.join(encrypted)} and no keys are configured: the row "
                              "hashes cover plaintext; set VOXTRAIL_KEYS or the key file (docs/encryption.md)")
        try:
            return decrypt_frame(frame, self.keyring, encrypted)
        except DecryptionError as exc:
            # A ciphertext that does not authenticate was altered (or moved from another row).
            raise _Tampered(str(exc)) from exc


#: A JSON column's stand-in content when its text is not JSON (itself JSON, as the content is
#: canonicalised again): no row hash matches it, as the store never writes a NUL.
_NOT_JSON = '"\\u0000 the stored text is not JSON"'


def _stored_json(text: str | None) -> str | None:
    """The canonical text of a JSON column as read back (chain.canonical_json)."""
    if text is None:
        return None
    try:
        return chain.canonical_json(text)
    except orjson.JSONDecodeError:
        return _NOT_JSON


class _Tampered(VerifyError):
    """A ciphertext that does not authenticate: evidence of tampering, reported as a broken chain."""


def _links(conn: sa.Connection, page: int = 10_000) -> Iterator[chain.Link]:
    after = 0
    while True:
        rows = conn.execute(
            sa.select(chain_links).where(chain_links.c.seq > after).order_by(chain_links.c.seq).limit(page)
        ).mappings().all()
        if not rows:
            return
        for row in rows:
            yield chain.link_from_row(row)
        after = int(rows[-1]["seq"])


class _Peekable:
    def __init__(self, it: Iterator[dict]) -> None:
        self._it = it
        self._next: Any = None
        self._done = False

    def peek(self) -> dict | None:
        if self._next is None and not self._done:
            self._next = next(self._it, None)
            self._done = self._next is None
        return self._next

    def next(self) -> dict:
        value = self.peek()
        self._next = None
        return value

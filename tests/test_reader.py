"""The chunk reader: complete lines only, offsets exact, gzip, BOM, huge lines, hold-back."""

import gzip
import os

import pytest

from voxtrail.sources.files import reader


def chunks_of(path, start=0, *, chunk_bytes=64, complete=None, consume=None):
    complete = reader.is_gzip(str(path)) if complete is None else complete
    with reader.open_content(str(path)) as f:
        rd = reader.ChunkReader(f, start, complete=complete, chunk_bytes=chunk_bytes)
        out = []
        for chunk in rd:
            out.append(chunk)
            if consume:
                rd.resume_at(consume(chunk), chunk)
        return out, rd


def test_only_complete_lines_and_exact_offsets(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"one\ntwo\r\nthree\npartial")
    chunks, rd = chunks_of(p, chunk_bytes=4)
    data = b"".join(c.data for c in chunks)
    assert data == b"one\ntwo\r\nthree\n"
    offsets = [int(o) for c in chunks for o in c.line_offsets()]
    assert offsets == [0, 4, 9]
    assert [x for c in chunks for x in c.lines().to_list()] == ["one", "two", "three"]
    assert rd.position == 15  # the partial line waits


def test_partial_last_line_is_read_once_complete(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"one\npart")
    first, rd = chunks_of(p)
    assert rd.position == 4
    with open(p, "ab") as f:
        f.write(b"ial\n")
    second, _ = chunks_of(p, start=rd.position)
    assert [x for c in second for x in c.lines().to_list()] == ["partial"]


def test_gzip_offsets_are_decompressed_offsets_and_last_line_needs_no_newline(tmp_path):
    p = tmp_path / "a.log.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"alpha\nbeta\ngamma")
    chunks, rd = chunks_of(p, start=6)
    assert chunks[-1].final
    assert [x for c in chunks for x in c.lines().to_list()] == ["beta", "gamma"]
    assert [int(o) for c in chunks for o in c.line_offsets()] == [6, 11]
    assert rd.position == 16


def test_truncated_gzip_is_reported(tmp_path):
    p = tmp_path / "a.log.gz"
    payload = b"".join(b"line %d %s\n" % (i, os.urandom(8).hex().encode()) for i in range(5000))
    p.write_bytes(gzip.compress(payload)[:2000])
    with pytest.raises(reader.TruncatedCompressedFile):
        chunks_of(p)


def test_bom_is_skipped():
    assert reader.first_line_start(b"\xef\xbb\xbfhello\n") == 3
    assert reader.first_line_start(b"hello\n") == 0


def test_held_back_bytes_are_not_offered_again_without_new_data(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"block-start\nline\n")
    chunks, rd = chunks_of(p, consume=lambda c: c.start)  # a format waiting for more
    assert len(chunks) == 1 and rd.position == 0


def test_held_back_bytes_get_a_final_offer_in_a_complete_file(tmp_path):
    p = tmp_path / "a.log.gz"
    p.write_bytes(gzip.compress(b"block-start\nline\n"))
    chunks, _ = chunks_of(p, consume=lambda c: c.end if c.final else c.start)
    assert [c.final for c in chunks] == [True]


def test_oversized_line_is_skipped_with_its_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 1000)
    p = tmp_path / "a.log"
    p.write_bytes(b"ok\n" + b"x" * 5000 + b"\nafter\n")
    chunks, rd = chunks_of(p, chunk_bytes=256)
    assert [x for c in chunks for x in c.lines().to_list()] == ["ok", "after"]
    assert [o for o, _ in rd.oversized] == [3]
    assert rd.oversized[0][1] == b"x" * 200
    assert [int(o) for c in chunks for o in c.line_offsets()] == [0, 5004]


def test_oversized_line_still_being_written_waits(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 1000)
    p = tmp_path / "a.log"
    p.write_bytes(b"ok\n" + b"x" * 5000)
    chunks, rd = chunks_of(p, chunk_bytes=256)
    assert [x for c in chunks for x in c.lines().to_list()] == ["ok"]
    assert rd.oversized == [] and rd.position == 3

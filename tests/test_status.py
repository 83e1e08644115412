"""voxtrail status: counts, time range and per-stream positions from the query layer."""

from __future__ import annotations

import json
import subprocess
import sys

from logdata import text_lines, write
from voxtrail.query.status import store_status
from voxtrail.sources.files.importer import Importer
from voxtrail.store import Store


def test_status_reports_counts_and_how_far_behind(db_url, tmp_path):
    exp = text_lines(300, seed=70)
    log = tmp_path / "tts.log"
    write(log, exp)
    with Store.open(db_url) as store:
        Importer(store, tz="UTC").run([str(log)])
        with open(log, "a", encoding="utf-8") as f:
            f.write("not a log line\n")
            f.write(exp.lines[0])
        status = store_status(store.engine)
    assert (status.events, status.failed, status.rejects) == (300, exp.failed, 0)
    assert status.first_ts < status.last_ts
    [stream] = status.streams
    assert stream.path == str(log) and stream.format == "text"
    assert stream.behind == len("not a log line\n") + len(exp.lines[0].encode())


def test_status_json_from_the_command_line(tmp_path):
    write(tmp_path / "tts.log", text_lines(10, seed=71))
    db = f"sqlite:///{tmp_path / 'v.db'}"
    subprocess.run([sys.executable, "-m", "voxtrail", "import", str(tmp_path / "tts.log"), "--db", db], check=True,
                   capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "voxtrail", "status", "--db", db, "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["events"] == 10 and data["streams"][0]["behind"] == 0

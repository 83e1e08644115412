"""The command line as a user meets it: summaries, --json, one-line errors, exit statuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from logdata import text_lines, write

VOXTRAIL = [sys.executable, "-m", "voxtrail"]


def voxtrail(*args, cwd=None, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRAIL_")}
    full_env.update(env or {})
    return subprocess.run([*VOXTRAIL, *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=120)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_json_summary(tmp_path):
    exp = text_lines(120, seed=30)
    write(tmp_path / "tts.log", exp)
    db = f"sqlite:///{tmp_path / 'v.db'}"
    proc = voxtrail("import", str(tmp_path / "tts.log"), "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["imported"], summary["duplicates"], summary["rejected"]) == (120, 0, 0)
    again = json.loads(voxtrail("import", str(tmp_path / "tts.log"), "--db", db, "--json").stdout)
    assert again["imported"] == 0


def test_default_database_is_voxtrail_db_in_the_working_directory(tmp_path):
    write(tmp_path / "tts.log", text_lines(5, seed=31))
    proc = voxtrail("import", "tts.log", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "voxtrail.db").exists()
    assert "5 imported" in proc.stderr


def test_environment_variable_names_the_database(tmp_path):
    write(tmp_path / "tts.log", text_lines(5, seed=32))
    db = tmp_path / "env.db"
    proc = voxtrail("import", "tts.log", cwd=tmp_path, env={"VOXTRAIL_DB": f"sqlite:///{db}"})
    assert proc.returncode == 0, proc.stderr
    assert db.exists() and not (tmp_path / "voxtrail.db").exists()


def test_missing_file(tmp_path):
    assert_one_line_error(voxtrail("import", str(tmp_path / "nope.log"), "--db", f"sqlite:///{tmp_path}/v.db"), "nope.log")


def test_glob_matching_nothing(tmp_path):
    assert_one_line_error(voxtrail("import", str(tmp_path / "*.log"), "--db", f"sqlite:///{tmp_path}/v.db"), "no file matches")


def test_unreachable_database(tmp_path):
    write(tmp_path / "tts.log", text_lines(5, seed=33))
    proc = voxtrail("import", str(tmp_path / "tts.log"), "--db", "postgresql://nobody:secret@127.0.0.1:1/x")
    assert_one_line_error(proc)
    assert "secret" not in proc.stderr


def test_bad_flag():
    assert_one_line_error(voxtrail("import", "x.log", "--bogus"), "--bogus")
    assert voxtrail("import", "x.log", "--bogus").returncode == 2


def test_bad_format_and_time_zone(tmp_path):
    write(tmp_path / "tts.log", text_lines(5, seed=34))
    assert_one_line_error(voxtrail("import", str(tmp_path / "tts.log"), "--format", "xml"), "xml")
    assert_one_line_error(voxtrail("import", str(tmp_path / "tts.log"), "--tz", "Mars/Base",
                                   "--db", f"sqlite:///{tmp_path}/v.db"), "Mars/Base")


def test_unknown_format_is_reported_and_exit_is_non_zero(tmp_path):
    (tmp_path / "notes.txt").write_text("just some words\nnot a log at all\n")
    proc = voxtrail("import", str(tmp_path / "notes.txt"), "--db", f"sqlite:///{tmp_path}/v.db", "--json")
    assert proc.returncode == 1
    assert "cannot tell the format" in json.loads(proc.stdout)["errors"][0]["message"]


def test_help_explains():
    proc = voxtrail("import", "--help")
    assert proc.returncode == 0
    for word in ("--db", "--format", "--tz", "--json", "exactly once"):
        assert word in " ".join(proc.stdout.split())


def test_directory_instead_of_files(tmp_path):
    assert_one_line_error(voxtrail("import", str(tmp_path), "--db", f"sqlite:///{tmp_path}/v.db"), "is a directory")


def test_progress_bar_on_a_terminal_only(tmp_path):
    import pty
    import select

    write(tmp_path / "tts.log", text_lines(60000, seed=35))
    db = f"sqlite:///{tmp_path / 'v.db'}"
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRAIL_")}
    env.update(COLUMNS="100", TERM="xterm")
    proc = subprocess.Popen([*VOXTRAIL, "import", str(tmp_path / "tts.log"), "--db", db, "--chunk-bytes", "65536"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not data:
            break
        seen += data
    proc.wait(timeout=60)
    os.close(master)
    text = seen.decode("utf-8", "replace")
    assert proc.returncode == 0
    assert "importing" in text and "MB" in text  # the bar, with bytes done
    assert "60,000 imported" in text
    quiet = voxtrail("import", str(tmp_path / "tts.log"), "--db", db)
    assert "importing" not in quiet.stderr  # not a terminal: no bar

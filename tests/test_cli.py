"""The command line as a user meets it: summaries, --json, one-line errors, exit statuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import NamedTuple

import pytest

from logdata import text_lines, write

VOXTRAIL = [sys.executable, "-m", "voxtrail"]


def voxtrail(*args, cwd=None, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRAIL_")}
    full_env.update(env or {})
    return subprocess.run([*VOXTRAIL, *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=120)


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


class Hung(Exception):
    pass


def _hung(*_):
    raise Hung("the command did not finish in time (a FIFO or a device read?)")


def voxtrail_in_process(*args, env=None, input=None, timeout=30) -> Ran:
    """``voxtrail ARGS`` run by :func:`voxtrail.cli.main` in this process (no interpreter start:
    ~100 times faster than :func:`voxtrail`), with its own stdin/stdout/stderr and environment
    (``env`` adds to the test's, without any VOXTRAIL_* variable of the developer's shell).
    An exception escaping ``main`` is re-raised: the CLI must turn every error into an exit."""
    from click.testing import CliRunner

    from voxtrail.cli import main

    saved_env = dict(os.environ)
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    for name in [k for k in os.environ if k.startswith("VOXTRAIL_")]:
        del os.environ[name]
    os.environ.update(env or {})
    signal.signal(signal.SIGALRM, _hung)
    signal.alarm(timeout)
    code = 0
    try:
        with CliRunner().isolation(input=input) as (out, err, _):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            return Ran(code, out.getvalue().decode("utf-8", "replace"), err.getvalue().decode("utf-8", "replace"))
    finally:
        signal.alarm(0)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        os.environ.clear()
        os.environ.update(saved_env)


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


# --- bad values: one line, the right exit status, whichever command and source ----------------------

def _bad_values(tmp_path):
    log = tmp_path / "tts.log"
    write(log, text_lines(3, seed=36))
    (tmp_path / "conf.d").mkdir()
    db = f"sqlite:///{tmp_path / 'v.db'}"
    return [  # (arguments, environment, exit status, what the line must name)
        (["import", str(log), "--tz", "Etc", "--db", db], {}, 2, "--tz: unknown time zone 'Etc'"),
        (["import", str(log), "--tz", "Z" * 300, "--db", db], {}, 2, "--tz: unknown time zone"),
        (["import", str(log), "--db", db], {"VOXTRAIL_TZ": "Etc"}, 1, "VOXTRAIL_TZ: unknown time zone 'Etc'"),
        (["report", "--tz", "Etc", "--db", db], {}, 2, "--tz: unknown time zone 'Etc'"),
        (["report", "--tz", "America", "--db", db], {}, 2, "--tz: unknown time zone 'America'"),
        (["status", "--config", str(tmp_path / "conf.d"), "--db", db], {}, 1, "is a directory, not a file"),
        (["serve", "--max-body", "0.5", "--db", db], {}, 2, "--max-body '0.5' is not a size"),
        (["serve", "--max-body", "1e400", "--db", db], {}, 2, "--max-body '1e400' is not a size"),
        (["serve", "--db", db], {"VOXTRAIL_MAX_BODY": "1e400"}, 2, "--max-body '1e400' is not a size"),
        (["serve", "--purge-every", "99999999999d", "--db", db], {}, 2, "--purge-every = '99999999999d' is longer"),
        (["purge", "--audit", "99999999999d", "--db", db], {}, 2, "retention audit = '99999999999d' (--audit) is longer"),
        (["purge", "--dry-run", "--db", db], {"VOXTRAIL_RETENTION_OPERATIONS": "99999999999d"}, 1,
         "(VOXTRAIL_RETENTION_OPERATIONS) is longer"),
        (["report", "--since", "999999999w", "--db", db], {}, 2, "--since"),
        (["report", "--until", "99999999999d", "--db", db], {}, 2, "--until"),
        (["access-log", "--since", "999999999w", "--db", db], {}, 2, "--since"),
        (["rollup", "rebuild", "--since", "999999999w", "--db", db], {}, 2, "--since"),
        (["status", "--db", ""], {}, 2, "--db is empty"),
        (["tail", str(log), "--interval", "nan", "--db", db], {}, 2, "--interval must be a number of seconds"),
        (["collect", "--redis", "redis://127.0.0.1:1", "--stream", "", "--db", db], {}, 2, "--stream is empty"),
        (["keys", "reencrypt", "--pause", "inf", "--db", db], {}, 2, "--pause must be a number of seconds"),
        (["demo", "--no-serve", "--seed", "-1"], {}, 2, "--seed"),
        (["status", "--db", db], {"VOXTRAIL_CONFIG": "A" * 300}, 1, "File name too long"),
        (["status", "--db", "nosuch://x\nINFO: all fine"], {}, 1, "x\\nINFO: all fine"),  # one line, always
    ]


def test_bad_values_are_one_line_errors_with_the_documented_exit_status(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args, env, status, needle in _bad_values(tmp_path):
        ran = voxtrail_in_process(*args, env=env)
        assert ran.returncode == status, (args, env, ran)
        assert_one_line_error(ran, needle)


def test_bad_values_from_a_real_shell_are_one_line_errors(tmp_path):
    """The same through a real process: what the shell passes, the environment, the exit status."""
    db = f"sqlite:///{tmp_path / 'v.db'}"
    write(tmp_path / "tts.log", text_lines(3, seed=37))
    proc = voxtrail("import", "tts.log", "--db", "", cwd=tmp_path)  # --db "$DB_URL" with DB_URL unset
    assert proc.returncode == 2 and not (tmp_path / "voxtrail.db").exists()
    assert_one_line_error(proc, "--db is empty")
    assert_one_line_error(voxtrail("import", "tts.log", "--db", db, cwd=tmp_path, env={"VOXTRAIL_TZ": "Etc"}),
                          "VOXTRAIL_TZ: unknown time zone 'Etc'")
    ran = voxtrail("import", "tts.log", "--db", db, cwd=tmp_path, env={"TZ": "Etc"})  # the machine's own
    assert ran.returncode == 0, ran.stderr
    assert_one_line_error(voxtrail("report", "--since", "999999999w", "--db", db), "--since")


def test_fifos_devices_and_directories_are_refused_without_blocking(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "elsewhere" / "voxtrail.toml").mkdir(parents=True)  # the default config file's name, a directory
    db = f"sqlite:///{tmp_path / 'v.db'}"
    # Real processes for the two that used to block or never end...
    assert_one_line_error(voxtrail("import", "pipe", "--db", db, cwd=tmp_path), "pipe is not a regular file")
    assert_one_line_error(voxtrail("status", "--config", "/dev/zero", "--db", db), "is a device, not a regular file")
    # ...and in process for the rest (a read that blocks fails the test after 30 s instead).
    monkeypatch.chdir(tmp_path)
    for args in (["import", "/dev/null", "--db", db], ["tail", "pipe", "--db", db]):
        assert_one_line_error(voxtrail_in_process(*args), "is not a regular file")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert_one_line_error(voxtrail_in_process("status", "--db", db), "voxtrail.toml is a directory")
    monkeypatch.chdir(tmp_path)
    for command in (["keys", "list", "--db", db, "--key-file"], ["status", "--db", db, "--config"],
                    ["verify", "--db", db, "--checkpoint"]):
        assert_one_line_error(voxtrail_in_process(*command, "pipe"), "pipe is a FIFO, not a regular file")
        assert_one_line_error(voxtrail_in_process(*command, "/dev/zero"), "is a device, not a regular file")
        assert_one_line_error(voxtrail_in_process(*command, str(tmp_path)), "is a directory, not a file")
    assert_one_line_error(voxtrail_in_process("demo", "--no-serve", "--db", "/dev/null"), "is a device")
    # A glob skips what is not a regular file, as it skips directories.
    os.mkfifo(tmp_path / "b.log")
    write(tmp_path / "a.log", text_lines(4, seed=38))
    ran = voxtrail_in_process("import", str(tmp_path / "*.log"), "--db", db, "--json")
    assert ran.returncode == 0 and json.loads(ran.stdout)["imported"] == 4, ran.stderr


def test_file_names_and_values_with_markup_are_printed_as_they_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d[").mkdir()
    write(tmp_path / "d[" / "x].log", text_lines(5, seed=39))  # the path reads d[/x].log
    (tmp_path / "d[" / "y].log").write_text("no log format here\n")
    db = f"sqlite:///{tmp_path / 'v.db'}"
    ran = voxtrail_in_process("import", "d[/x].log", "d[/y].log", "--db", db)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran.stderr  # one file had no format
    assert "d[/x].log" in ran.stderr and "cannot tell the format of d[/y].log" in ran.stderr
    report = voxtrail_in_process("report", "--since", "3000d", "--node", "[/b]", "--db", db)
    assert report.returncode == 0 and "node=[/b]" in report.stdout, report.stderr
    assert "d[/x].log" in voxtrail_in_process("status", "--db", db).stdout


def test_a_password_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    proc = subprocess.run([*VOXTRAIL, "user", "add", "bob", "--role", "viewer", "--password-stdin", "--db",
                           f"sqlite:///{tmp_path / 'v.db'}"], input=b"pass\xff\xfeword\n", capture_output=True,
                          timeout=120)
    assert proc.returncode == 1 and proc.stderr.decode().count("\n") == 1, proc.stderr
    assert b"not UTF-8" in proc.stderr


def test_an_unexpected_exception_is_one_line_and_exit_70_unless_debugging(tmp_path, monkeypatch):
    def broken(engine):
        raise RuntimeError("a bug")

    monkeypatch.setattr("voxtrail.query.status.store_status", broken)
    db = f"sqlite:///{tmp_path / 'v.db'}"
    ran = voxtrail_in_process("status", "--db", db)
    assert ran.returncode == 70
    assert_one_line_error(ran, "internal error", "RuntimeError: a bug", "VOXTRAIL_DEBUG=1")
    with pytest.raises(RuntimeError, match="a bug"):
        voxtrail_in_process("status", "--db", db, env={"VOXTRAIL_DEBUG": "1"})

"""Hostile values for every value-taking option, VOXTRAIL_* variable and TOML key of the CLI.

The property: whatever the value, ``voxtrail`` succeeds, or exits non-zero with exactly one line
on stderr (``voxtrail: error: ...``): no traceback, no "internal error" (exit status 70, the
last-resort handler of voxtrail.cli.main, which would mean a bug reached it). Commands run in
process (tests/test_cli.py's voxtrail_in_process) for speed; the servers and followers they would
start are replaced by stubs that return at once, since what is under test is the values' path to
them. Values are what a shell can pass: no NUL (execve cannot), but bytes that are not UTF-8
(they arrive as lone surrogates), control characters, huge and non-finite numbers, markup,
paths to a directory, a FIFO, a device, a missing or a huge file.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from hypothesis import given, settings, strategies as st

from test_cli import voxtrail_in_process
from test_redis import REDIS_URL, redis_client  # noqa: F401 - the fixture

EXAMPLES = max(10, settings().max_examples // 5)  # per (command, option): ~40 of them

SPECIAL = [
    "", " ", "0", "-1", "0.5", "1e400", "-1e400", "nan", "inf", "-inf", "1e-400", "99999999999999999999",
    "99999999999d", "999999999w", "-5d", "0d", "1w", "90m", "36h", "7d", "off", "all", "forever",
    "Etc", "America", "Etc/", "UTC", "Asia/Shanghai", "A" * 300, "é", "日本/東京", "/", "..", "../../etc/passwd",
    "\n", "\r\n", "\t", "1_000", "0x10", "１２", "²", "٣", "9" * 5000, "[/x]", "[bold]x[/bold]", "%s%n{0}",
    "\udcff", "\udc80abc", "\u202e", "\u2028", "\x1b[31m", "-", "--", "--db", "2026-11-01", "2026-11-01T08:00+08:00",
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "1970-01-01", "10MiB", "0b", "1GiB", "2GiB",
    "{DIR}", "{FIFO}", "{MISSING}", "/dev/null", "/dev/zero", "{BIG}", "{BINARY}", "{LOG}",
]
TEXT = st.text(st.one_of(st.characters(codec="utf-8", exclude_characters="\x00"), st.sampled_from("\udc80\udcff")),
               max_size=30)
NUMBERS = st.one_of(st.integers(min_value=-(10**30), max_value=10**30).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr))
AGES = st.builds(lambda n, unit: f"{n}{unit}", st.integers(min_value=-5, max_value=10**25),
                 st.sampled_from(["", "m", "min", "h", "d", "w", "y", " d", "D", "s", "dd"]))
VALUES = st.one_of(st.sampled_from(SPECIAL), TEXT, NUMBERS, AGES)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Files the values may name, a database with a user and a token, and a key file."""
    root = tmp_path_factory.mktemp("cli-fuzz")
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")
    (root / "big").write_bytes(b"# x\n" * 400_000)  # 1.6 MB: larger than any settings file
    (root / "binary").write_bytes(bytes(range(256)) * 8)
    (root / "tts.log").write_text("[2025-03-01 00:00:01,250] INFO - TextLen=75, Emotion=x, Duration=7.9s, Success=True\n")
    db = f"sqlite:///{root / 'fuzz.db'}"
    home = root / "xdg"
    env = {"XDG_CONFIG_HOME": str(home)}
    assert voxtrail_in_process("user", "add", "admin", "--role", "admin", "--password-stdin", "--db", db,
                               input="a-good-password\n", env=env).returncode == 0
    assert voxtrail_in_process("token", "create", "fuzz-token", "--db", db, env=env).returncode == 0
    assert voxtrail_in_process("keys", "init", env=env).returncode == 0
    return {"root": root, "db": db, "env": env,
            "places": {"{DIR}": str(root / "dir"), "{FIFO}": str(root / "fifo"), "{MISSING}": str(root / "none"),
                       "{BIG}": str(root / "big"), "{BINARY}": str(root / "binary"), "{LOG}": str(root / "tts.log")}}


@pytest.fixture(autouse=True)
def in_workspace(workspace, monkeypatch):
    monkeypatch.chdir(workspace["root"] / "dir")  # a relative name (demo --db é) lands here


@pytest.fixture
def stubs(monkeypatch):
    """serve binds its socket and loads its TLS files, then returns instead of serving; tail
    returns instead of following: their options are what is under test."""
    calls = []
    monkeypatch.setattr("uvicorn.Server.run", lambda self, sockets=None: calls.append(sockets))
    monkeypatch.setattr("voxtrail.sources.files.follow.follow", lambda *a, **kw: calls.append(a))
    return calls


def resolved(value: str, workspace) -> str:
    return workspace["places"].get(value, value)


def assert_clean(ran, what) -> None:
    assert ran.returncode != 70 and "Traceback" not in ran.stderr, (what, ran.stderr)
    if ran.returncode == 1 and ran.stdout.startswith("{") and json.loads(ran.stdout)["errors"]:
        return  # import --json: a file it could not import at all, said in the summary (README)
    if ran.returncode != 0:
        lines = ran.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("voxtrail: error: "), (what, ran.returncode, ran.stderr)


# (command line before the option, option): {db} is the workspace's database, {log} a log file.
OPTIONS = [
    (["import", "{log}", "--json"], "--tz"), (["import", "{log}", "--json"], "--db"),
    (["import", "{log}", "--json"], "--config"), (["import", "{log}", "--json"], "--format"),
    (["import", "{log}", "--json"], "--chunk-bytes"), (["import", "--json"], ""),
    (["tail", "{log}"], "--interval"), (["tail", "{log}"], "--tz"), (["tail"], ""),
    (["status"], "--db"), (["status"], "--config"),
    (["report"], "--since"), (["report"], "--until"), (["report"], "--tz"), (["report"], "--node"),
    (["report"], "--status"), (["rollup", "rebuild"], "--since"),
    (["serve"], "--host"), (["serve"], "--port"), (["serve"], "--max-body"), (["serve"], "--purge-every"),
    (["serve"], "--certfile"), (["serve"], "--metrics"), (["serve"], "--header-timeout"), (["serve"], "--body-timeout"),
    (["serve"], "--forwarded-allow-ips"), (["serve"], "--metrics-label-values"),
    (["purge", "--dry-run"], "--audit"), (["purge", "--dry-run"], "--operations"), (["purge"], "--batch-size"),
    (["verify"], "--checkpoint"),
    (["access-log"], "--since"), (["access-log"], "--until"), (["access-log"], "--actor"),
    (["access-log"], "--limit"), (["access-log"], "--action"),
    (["token", "create"], ""), (["token", "revoke"], ""), (["user", "role"], ""), (["user", "remove"], ""),
    (["keys", "list"], "--key-file"), (["keys", "reencrypt"], "--batch-size"), (["keys", "reencrypt"], "--pause"),
    (["keys", "retire"], ""),
    (["demo", "--no-serve", "--events", "0", "--db", "{root}/demo.db"], "--days"),
    (["demo", "--no-serve", "--events", "0"], "--db"), (["demo", "--no-serve", "--events", "0"], "--seed"),
]
NO_DB = {"demo", "keys init"}


def command_line(base: list[str], option: str, value: str, workspace) -> list[str]:
    fill = {"{log}": workspace["places"]["{LOG}"]}
    argv = [fill.get(a, a.replace("{root}", str(workspace["root"]))) for a in base]
    argv += [option, value] if option else [value]
    if base[0] not in NO_DB and option != "--db":
        argv += ["--db", workspace["db"]]
    return argv


@pytest.mark.parametrize("base, option", OPTIONS, ids=[f"{' '.join(b[:2])} {o}" for b, o in OPTIONS])
@settings(max_examples=EXAMPLES)
@given(value=VALUES)
def test_every_option_takes_any_value_without_a_traceback(workspace, stubs, base, option, value):
    value = resolved(value, workspace)
    if option == "--db" and base[0] == "demo" and value.startswith("/") and not value.startswith("/dev/"):
        value = str(workspace["root"]) + value  # demo creates that file: never outside the workspace
    argv = command_line(base, option, value, workspace)
    if base[:2] == ["user", "role"]:
        argv.insert(3, "viewer")
    assert_clean(voxtrail_in_process(*argv, env=workspace["env"]), argv)


#: One option of each kind of value, tried with every special value (the random ones above may miss
#: a given special value in one run; these never do).
SWEEP = [
    (["import", "{log}", "--json"], "--tz"), (["status"], "--db"), (["status"], "--config"), (["report"], "--since"),
    (["access-log"], "--until"), (["purge", "--dry-run"], "--audit"), (["serve"], "--max-body"), (["serve"], "--host"),
    (["serve"], "--port"), (["tail", "{log}"], "--interval"), (["keys", "list"], "--key-file"),
    (["verify"], "--checkpoint"), (["import", "--json"], ""), (["token", "create"], ""), (["access-log"], "--actor"),
]


@pytest.mark.parametrize("base, option", SWEEP, ids=[f"{' '.join(b[:2])} {o}" for b, o in SWEEP])
def test_each_kind_of_option_takes_every_special_value(workspace, stubs, base, option):
    for value in SPECIAL:
        test_every_option_takes_any_value_without_a_traceback.hypothesis.inner_test(
            workspace, stubs, base, option, value)


@settings(max_examples=EXAMPLES)
@given(name=VALUES, password=TEXT)
def test_user_add_takes_any_name_and_password(workspace, name, password):
    argv = ["user", "add", resolved(name, workspace), "--role", "viewer", "--password-stdin", "--db", workspace["db"]]
    ran = voxtrail_in_process(*argv, input=(password + "\n").encode("utf-8", "surrogateescape"),
                              env=workspace["env"])
    assert_clean(ran, argv)


@settings(max_examples=EXAMPLES)
@given(option=st.sampled_from(["--stream", "--group", "--consumer", "--batch-size", "--claim-idle", "--redis"]),
       value=VALUES)
def test_collect_takes_any_value(workspace, redis_client, option, value):  # noqa: F811
    stream = f"voxtrail-test:fuzz:{uuid.uuid4().hex[:10]}"
    argv = ["collect", "--redis", REDIS_URL, "--stream", stream, "--drain", "--db", workspace["db"],
            option, resolved(value, workspace)]
    try:
        assert_clean(voxtrail_in_process(*argv, env=workspace["env"]), argv)
    finally:
        redis_client.delete(stream)
        if option == "--stream":
            redis_client.delete(value)  # a stream of that name may have been made (a valid one)


VARIABLES = ["VOXTRAIL_DB", "VOXTRAIL_TZ", "VOXTRAIL_CONFIG", "VOXTRAIL_MASK", "VOXTRAIL_ENCRYPT_FIELDS",
             "VOXTRAIL_KEYS", "VOXTRAIL_KEY_FILE", "VOXTRAIL_RETENTION_AUDIT", "VOXTRAIL_RETENTION_OPERATIONS",
             "VOXTRAIL_HOST", "VOXTRAIL_PORT", "VOXTRAIL_METRICS", "VOXTRAIL_MAX_BODY", "VOXTRAIL_CERTFILE",
             "VOXTRAIL_KEYFILE", "VOXTRAIL_SECURE_COOKIES", "VOXTRAIL_PURGE_EVERY", "VOXTRAIL_HEADER_TIMEOUT",
             "VOXTRAIL_BODY_TIMEOUT", "VOXTRAIL_FORWARDED_ALLOW_IPS", "VOXTRAIL_METRICS_LABEL_VALUES", "TZ"]
#: Commands that read those variables: they import (tz, mask, keys), purge, list keys and serve.
READERS = [["import", "{log}", "--json"], ["purge", "--dry-run"], ["keys", "list"], ["serve"], ["status"]]


@pytest.mark.parametrize("variable", VARIABLES)
@settings(max_examples=EXAMPLES)
@given(value=VALUES.filter(lambda v: "\udc80" not in v and "\udcff" not in v), reader=st.sampled_from(READERS))
def test_every_variable_takes_any_value_without_a_traceback(workspace, stubs, variable, value, reader):
    # (A variable's bytes that are not UTF-8 become surrogates too, but os.environ cannot be set
    # to them from Python: the values of argv cover that path.)
    argv = [a for a in command_line(reader, "", "", workspace) if a != ""]
    env = {**workspace["env"], variable: resolved(value, workspace)}
    if variable == "VOXTRAIL_DB":
        argv = argv[: argv.index("--db")]
    assert_clean(voxtrail_in_process(*argv, env=env), (variable, value, argv))


TOML_VALUES = st.one_of(
    st.sampled_from(['""', '" "', "0", "-1", "1.5", "nan", "inf", "true", "[]", "{}", '"Etc"', '"\\u0000"',
                     '"a\\u0000b"', '"' + "A" * 300 + '"', '"99999999999d"', '"{DIR}"', '"{FIFO}"', '"/dev/zero"',
                     "99999999999999999999", '"９"', '"off"', "[1, 2]", "{a = 1}", '["ref_audio_url"]', '["x"]',
                     '[{pattern = "("}]', '[{pattern = "a", replacement = 1}]', "1979-05-27T07:32:00Z", '"[/x]"']),
    TEXT.map(lambda t: '"' + t.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
             .replace("\\", "\\\\").replace('"', '\\"') + '"'),
)
KEYS = [("", "db"), ("", "tz"), ("retention", "audit"), ("retention", "operations"), ("keys", "file"),
        ("encrypt", "fields"), ("mask", "enabled"), ("mask", "fields"), ("mask", "disable"), ("mask", "rules"),
        ("", "retention"), ("", "keys"), ("", "mask"), ("", "encrypt")]


@pytest.mark.parametrize("section, key", KEYS, ids=[f"{s}.{k}".lstrip(".") for s, k in KEYS])
@settings(max_examples=EXAMPLES)
@given(value=TOML_VALUES, reader=st.sampled_from(READERS))
def test_every_toml_key_takes_any_value_without_a_traceback(workspace, stubs, tmp_path_factory, section, key,
                                                            value, reader):
    for place, path in workspace["places"].items():
        value = value.replace(place, path)
    db = "" if (section, key) == ("", "db") else f'db = "{workspace["db"]}"\n'
    config = tmp_path_factory.mktemp("toml") / "voxtrail.toml"
    config.write_text(db + (f"[{section}]\n" if section else "") + f"{key} = {value}\n", encoding="utf-8")
    argv = [a for a in command_line(reader, "", "", workspace) if a != ""]
    argv = argv[: argv.index("--db")] + ["--config", str(config)]
    assert_clean(voxtrail_in_process(*argv, env=workspace["env"]), (section, key, value, argv))

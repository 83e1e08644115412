"""Settings resolve flags, then VOXTRAIL_* variables, then the TOML file, then defaults; each kind
of value has one parser, whatever source it came from."""

import os
import re
import signal
from datetime import timedelta

import pytest

from voxtrail import config
from voxtrail.store import purge


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("VOXTRAIL_DB", "VOXTRAIL_TZ", "VOXTRAIL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults():
    settings = config.load()
    assert settings.db == "sqlite:///voxtrail.db"
    assert settings.tz == config.local_timezone()


def test_precedence(monkeypatch, tmp_path):
    (tmp_path / "voxtrail.toml").write_text('db = "sqlite:///from-file.db"\ntz = "Europe/Berlin"\n'
                                            '[retention]\naudit = "30d"\n')

    def resolved(**flags):
        settings = config.load(**flags)
        return settings.db, settings.tz

    assert resolved() == ("sqlite:///from-file.db", "Europe/Berlin")
    assert config.load().section("retention") == {"audit": "30d"} and config.load().section("mask") == {}
    monkeypatch.setenv("VOXTRAIL_DB", "sqlite:///from-env.db")
    monkeypatch.setenv("VOXTRAIL_TZ", "Asia/Shanghai")
    assert resolved() == ("sqlite:///from-env.db", "Asia/Shanghai")
    assert resolved(db="sqlite:///flag.db", tz="UTC") == ("sqlite:///flag.db", "UTC")


def test_settings_never_show_the_database_url():
    settings = config.Settings(db="postgresql://tts:S3cret@db/tts", tz="UTC", file={"db": "postgresql://tts:S3cret@db/tts"})
    assert "S3cret" not in repr(settings)


def test_a_section_that_is_not_a_table_is_a_clear_error():
    with pytest.raises(config.ConfigError, match=r"\[mask\] in the config file must be a table"):
        config.Settings(db="sqlite://", tz="UTC", file={"mask": "off"}).section("mask")


def test_explicit_config_file(monkeypatch, tmp_path):
    path = tmp_path / "other.toml"
    path.write_text('tz = "America/New_York"\n')
    monkeypatch.setenv("VOXTRAIL_CONFIG", str(path))
    assert config.load().tz == "America/New_York"


@pytest.mark.parametrize("content, message", [("db = ", "not valid TOML"), ('tz = "Nowhere/Atlantis"', "unknown time zone")])
def test_bad_settings_are_clear_errors(tmp_path, content, message):
    (tmp_path / "voxtrail.toml").write_text(content)
    with pytest.raises(config.ConfigError, match=message):
        config.load()


def test_missing_config_file():
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(config_file="nope.toml")


# --- one parser per kind of value ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["Etc", "America", "Etc/", "A" * 300, "a\x00b", "\udcff", "", " ", "UTC ", "/",
                                  "../../etc/passwd", "zone.tab", "Nowhere/Atlantis", 5, None])
def test_a_zone_that_is_not_one_is_a_config_error_naming_where_it_came_from(name):
    with pytest.raises(config.ConfigError, match=r"^--tz: unknown time zone .*IANA name"):
        config.parse_zone(name, "--tz")


def test_zone_names_are_accepted_as_given():
    assert [config.parse_zone(n, "tz") for n in ("UTC", "Asia/Shanghai", "Etc/GMT-14")] == \
        ["UTC", "Asia/Shanghai", "Etc/GMT-14"]


@pytest.mark.parametrize("variable, file, message", [
    ({"VOXTRAIL_TZ": "Etc"}, "", "VOXTRAIL_TZ: unknown time zone 'Etc'"),
    ({}, 'tz = "America"', "tz in voxtrail.toml: unknown time zone 'America'"),
    ({}, "tz = 8", "tz in voxtrail.toml: unknown time zone 8"),
    ({}, 'db = ""', "db in voxtrail.toml is empty"),
    ({}, "db = 5", "db in voxtrail.toml must be a string, not int 5"),
    ({}, 'db = "sqlite:///a\\u0000b.db"', "db in voxtrail.toml contains a NUL character"),
])
def test_every_source_of_a_setting_is_checked_by_the_same_rules(monkeypatch, tmp_path, variable, file, message):
    (tmp_path / "voxtrail.toml").write_text(file)
    for name, value in variable.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load()


def test_an_empty_flag_is_a_mistake_an_empty_variable_is_unset(monkeypatch):
    with pytest.raises(config.ConfigError, match="--db is empty"):
        config.load(db="")
    with pytest.raises(config.ConfigError, match="--tz is empty"):
        config.load(tz=" ")
    with pytest.raises(config.ConfigError, match="--config is empty"):
        config.load(config_file="")
    monkeypatch.setenv("VOXTRAIL_DB", "")
    monkeypatch.setenv("VOXTRAIL_TZ", "")
    monkeypatch.setenv("VOXTRAIL_CONFIG", "")
    assert config.load() == config.Settings(db=config.DEFAULT_DB, tz=config.local_timezone())


def test_a_machine_zone_variable_naming_a_directory_falls_back(monkeypatch):
    monkeypatch.setenv("TZ", "Etc")
    assert config.local_timezone() != "Etc" and config.is_zone(config.local_timezone())


@pytest.fixture
def no_hang():
    """A FIFO opened for reading blocks until a writer comes: fail the test instead of hanging."""
    def hung(*_):
        raise TimeoutError("reading blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "is a directory, not a file"),
    (lambda p: os.mkfifo(p), "is a FIFO, not a regular file"),
    (lambda p: os.symlink("/dev/zero", p), "is a device, not a regular file"),
    (lambda p: p.write_bytes(b"# x\n" * 300_000), "more than a config file can be"),
    (lambda p: p.write_bytes(b'tz = "\xff"\n'), "is not UTF-8 text"),
])
def test_a_config_file_that_is_not_a_small_text_file_is_one_clear_error(tmp_path, no_hang, make, message):
    path = tmp_path / "settings.toml"
    make(path)
    with pytest.raises(config.ConfigError, match=message):
        config.load(config_file=str(path))


@pytest.mark.parametrize("path, message", [("a\x00b", "contains a NUL character"), ("A" * 300, "name too long")])
def test_a_config_path_no_file_can_have_is_one_clear_error(path, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(config_file=path)


@pytest.mark.parametrize("value, message", [
    ("99999999999d", "longer than 36,525 days"), ("9" * 5000, "longer than 36,525 days"),
    ("5219w", "longer than 36,525 days"), ("１２d", "use a number of days"), ("", "use a number of days"),
    ("3 months", "use a number of days"), (True, "use a number of days"), (1.5, "use a number of days"),
    ("-5d", "use a number of days"),
])
def test_ages_are_bounded_and_ascii(value, message):
    with pytest.raises(config.ConfigError, match=f"^retention audit = .*{message}"):
        purge.parse_age(value, "retention audit", "--audit")


def test_ages_within_bounds():
    assert [purge.parse_age(v, "age") for v in ("off", "0", "30", 30, " 36h ", "5217w", "36525d")] == \
        [None, None, timedelta(days=30), timedelta(days=30), timedelta(hours=36), timedelta(weeks=5217),
         timedelta(days=36525)]

"""Settings resolve flags, then VOXTRAIL_* variables, then the TOML file, then defaults."""

import pytest

from voxtrail import config


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

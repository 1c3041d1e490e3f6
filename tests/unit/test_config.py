"""Configuration: the TOML file, environment overrides, and `carecal check-config`."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin.cli import main
from plugin.config import ConfigError, load_settings

SECRET = "whsec_c2VjcmV0LWtleS1mb3ItY29uZmlnLXRlc3RzLTEyMzQ="
TOKEN = "api-token-for-config-tests"

GOOD = f"""
[server]
port = 8099
public_url = "http://127.0.0.1:8099"

[database]
url = "sqlite+aiosqlite:///var/test.db"

[[tenants]]
id = "north"
webhook_secret = "{SECRET}"
api_token = "{TOKEN}"

[[tenants]]
id = "south"
webhook_secret = ["{SECRET}", "whsec_b2xkLWtleS1mb3ItY29uZmlnLXRlc3RzLTEyMzQ1Ng=="]
api_token = "another-api-token-1234"
timezone = "Europe/Copenhagen"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "carecal.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_defaults_are_valid() -> None:
    settings = load_settings(Path(__file__).parents[2] / "config" / "carecal.toml", environ={})
    assert settings.calendar.type == "embedded"
    assert settings.database.url.startswith("sqlite+aiosqlite:///")
    assert [t.id for t in settings.tenants] == ["demo"]


def test_several_tenants_and_rotating_secrets(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), environ={})
    assert [t.id for t in settings.tenants] == ["north", "south"]
    south = settings.tenant("south")
    assert south is not None and len(south.webhook_secrets) == 2


def test_environment_overrides_keys_and_addresses_tenants_by_id(tmp_path: Path) -> None:
    env = {
        "CARECAL_SERVER__PORT": "9001",
        "CARECAL_DATABASE__URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        "CARECAL_TENANTS__SOUTH__LOCALE": "en",
        "CARECAL_CONFIG_IS_NOT_A_KEY": "ignored",
    }
    settings = load_settings(write(tmp_path, GOOD), environ=env)
    assert settings.server.port == 9001
    assert settings.database.url.startswith("postgresql+asyncpg://")
    south = settings.tenant("south")
    assert south is not None and south.locale == "en"


def test_every_bad_key_is_named(tmp_path: Path) -> None:
    bad = (
        GOOD.replace("port = 8099", 'port = "eighty"').replace(
            'timezone = "Europe/Copenhagen"', 'timezone = "Europe/Atlantis"'
        )
        + '\n[calendar]\ntype = "caldav"\nurl = "https://dav.example.org"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, bad), environ={"CARECAL_TENANTS__NORTH__API_TOKEN": "short"})
    keys = {key for key, _ in caught.value.problems}
    assert {"server.port", "tenants[south].timezone", "tenants[north].api_token"} <= keys
    assert any(key.startswith("calendar") for key in keys)


def test_check_config_names_bad_keys_and_never_prints_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.replace(SECRET, "whsec_%%%not-base64%%%", 1))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tenants[north].webhook_secret" in err
    assert "not-base64" not in err

    assert main(["--config", str(write(tmp_path, GOOD)), "check-config"]) == 0
    out, err = capsys.readouterr()
    assert "configuration OK" in err
    assert '"north"' in out
    for secret in (SECRET, TOKEN, "another-api-token-1234"):
        assert secret not in out + err


def test_a_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[server\nport = 1"), environ={})

"""Configuration: the TOML file, environment overrides, and `carecal check-config`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from plugin.cli import main
from plugin.config import CaldavCalendarSettings, ConfigError, load_settings

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


def test_the_postgresql_and_caldav_example_is_valid_with_its_secrets_given(
    tmp_path: Path,
) -> None:
    secret = "whsec_" + base64.b64encode(b"n" * 32).decode()
    password_file = tmp_path / "caldav-password"
    password_file.write_text("s3cret\n", encoding="utf-8")
    example = Path(__file__).parents[2] / "config" / "example-postgresql-caldav.toml"
    settings = load_settings(
        example,
        environ={
            "CARECAL_TENANTS__NORTH__WEBHOOK_SECRET": secret,
            "CARECAL_TENANTS__NORTH__API_TOKEN": "n" * 32,
            "CARECAL_TENANTS__NORTH__HOST_EVENTS_SECRET": secret,
            "CARECAL_CALENDAR__PASSWORD_FILE": str(password_file),
        },
    )
    calendar = settings.calendar
    assert isinstance(calendar, CaldavCalendarSettings)
    assert calendar.service_password() == "s3cret"
    assert calendar.url.endswith("/carecal/")


def test_a_caldav_calendar_is_checked(tmp_path: Path) -> None:
    body = """
[calendar]
type = "caldav"
url = "caldav.example/"
username = "carecal"
password_file = "/nonexistent/secret"
collection_template = "/{member}/"
server = "exchange"
"""
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, body), environ={})
    message = str(raised.value)
    for key in ("calendar.url", "calendar.collection_template", "calendar.server"):
        assert key in message, message


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


def test_ids_and_templates_that_would_name_a_folder_above_their_own_are_refused(
    tmp_path: Path,
) -> None:
    """A tenant id names the embedded server's folders (`<tenant>~<member>`), and the template
    the municipal server's collections under `url`: neither may start with or be a dot."""
    bad = GOOD.replace('id = "south"', 'id = ".south"') + (
        '\n[calendar]\ntype = "caldav"\nurl = "https://dav.example.org/cal/"\n'
        'username = "carecal"\npassword = "pw"\n'
        'collection_template = "../{tenant}~{member}~{citizen}/"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, bad.replace("/cal/", "/cal/../")), environ={})
    assert "calendar.url" in {key for key, _ in caught.value.problems}
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, bad), environ={})
    keys = {key for key, _ in caught.value.problems}
    assert {"tenants[.south].id", "calendar.collection_template"} <= keys


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


def test_outbox_and_escalation_defaults_file_and_environment(tmp_path: Path) -> None:
    defaults = load_settings(write(tmp_path, GOOD), environ={})
    assert defaults.outbox.dead_after_hours == 24 and defaults.outbox.concurrency == 8
    assert defaults.outbox.backoff_max_seconds == 900 and defaults.escalation.lookback_hours == 48
    text = GOOD + "\n[outbox]\ndead_after_hours = 6\ntimeout_seconds = 3\n"
    env = {"CARECAL_OUTBOX__CONCURRENCY": "2", "CARECAL_ESCALATION__INTERVAL_SECONDS": "30"}
    settings = load_settings(write(tmp_path, text), environ=env)
    assert settings.outbox.dead_after_hours == 6 and settings.outbox.timeout_seconds == 3
    assert settings.outbox.concurrency == 2 and settings.escalation.interval_seconds == 30


def test_bad_outbox_settings_are_named(tmp_path: Path) -> None:
    text = GOOD + "\n[outbox]\nretries = 3\n"
    env = {"CARECAL_OUTBOX__CONCURRENCY": "0", "CARECAL_OUTBOX__DEAD_AFTER_HOURS": "-1"}
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ=env)
    keys = {key for key, _ in caught.value.problems}
    assert {"outbox.concurrency", "outbox.dead_after_hours", "outbox.retries"} <= keys
    unordered = GOOD + "\n[outbox]\nbackoff_base_seconds = 60\nbackoff_max_seconds = 10\n"
    with pytest.raises(ConfigError, match="backoff_max_seconds must be at least"):
        load_settings(write(tmp_path, unordered), environ={})


def test_webhook_ids_are_kept_longer_than_a_signature_is_accepted(tmp_path: Path) -> None:
    defaults = load_settings(write(tmp_path, GOOD), environ={})
    assert defaults.server.keep_applied_webhooks_days == 7
    assert defaults.outbox.keep_delivered_days == 7
    env = {
        "CARECAL_SERVER__KEEP_APPLIED_WEBHOOKS_DAYS": "2",
        "CARECAL_OUTBOX__KEEP_DELIVERED_DAYS": "30",
    }
    settings = load_settings(write(tmp_path, GOOD), environ=env)
    assert settings.server.keep_applied_webhooks_days == 2
    assert settings.outbox.keep_delivered_days == 30
    # Forgotten within the tolerance, a replayed webhook would pass its signature check and
    # be recorded as new.
    short = {"CARECAL_SERVER__KEEP_APPLIED_WEBHOOKS_DAYS": "0.003"}  # ~4 minutes, under 5
    with pytest.raises(ConfigError, match="longer than webhook_tolerance_seconds"):
        load_settings(write(tmp_path, GOOD), environ=short)


def test_outbox_replay_wants_a_time_with_an_offset() -> None:
    from argparse import ArgumentTypeError
    from datetime import UTC, datetime

    from plugin.cli import aware_datetime

    assert aware_datetime("2027-03-01T07:00Z") == datetime(2027, 3, 1, 7, tzinfo=UTC)
    for bad in ("2027-03-01", "2027-03-01T08:00", "yesterday"):
        with pytest.raises(ArgumentTypeError):
            aware_datetime(bad)


def test_check_config_masks_the_passwords_and_keys_in_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database URL carries its password; a host's URL may carry a key in its query."""
    text = GOOD.replace(
        "sqlite+aiosqlite:///var/test.db",
        "postgresql+asyncpg://carecal:s3cretPW@db.kommune.example/carecal?ssl=require",
    ).replace(
        'api_token = "another-api-token-1234"',
        'api_token = "another-api-token-1234"\n'
        'host_events_url = "https://hook:h0stPW@host.example/events?key=abc123&x=1"\n'
        f'host_events_secret = "{SECRET}"',
    )
    assert main(["check-config", "--config", str(write(tmp_path, text))]) == 0
    out, err = capsys.readouterr()
    for secret in ("s3cretPW", "h0stPW", "abc123"):
        assert secret not in out + err
    assert "postgresql+asyncpg://carecal:**********@db.kommune.example/carecal?ssl=require" in out
    assert "https://hook:**********@host.example/events?key=**********&x=1" in out


def test_check_config_warns_of_every_public_demo_secret_beyond_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = (Path(__file__).parents[2] / "config" / "carecal.toml").read_text(encoding="utf-8")
    path = write(tmp_path, shipped)
    assert main(["check-config", "--config", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err  # the demo, on 127.0.0.1

    public = {"CARECAL_SERVER__PUBLIC_URL": "https://carecal.kommune.example"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in public.items():
            patch.setenv(name, value)
        assert main(["check-config", "--config", str(path)]) == 0
    err = capsys.readouterr().err
    for key in ("api_token", "staff_password", "webhook_secret", "data_key"):
        assert f"warning: tenants[demo].{key}: the public demo" in err, key


def test_two_tenants_may_not_share_an_api_token(tmp_path: Path) -> None:
    """A token names its tenant: a shared one would open only one of them."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, GOOD.replace("another-api-token-1234", TOKEN)), environ={})
    assert caught.value.problems == [
        ("tenants", "Value error, tenants 'north' and 'south' have the same api_token")
    ]
    assert TOKEN not in str(caught.value.problems)


def test_top_level_keys_and_lists_come_from_the_environment_too(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    other = "whsec_" + base64.b64encode(b"r" * 32).decode()
    settings = load_settings(
        path,
        environ={
            "CARECAL_HORIZON_WEEKS": "4",
            "CARECAL_SERVER__TRUSTED_PROXIES": '["10.0.0.1", "10.0.0.2"]',
            "CARECAL_TENANTS__NORTH__WEBHOOK_SECRET": f'["{other}", "{SECRET}"]',
            "CARECAL_CONFIG": str(path),  # not a key
        },
    )
    assert settings.horizon_weeks == 4
    assert settings.server.trusted_proxies == ["10.0.0.1", "10.0.0.2"]
    assert settings.tenant("north").webhook_secrets == [other, SECRET]  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={"CARECAL_HORIZON_WEEKS": "banana"})
    assert [key for key, _ in caught.value.problems] == ["horizon_weeks"]

"""Configuration: one TOML file plus `CARECAL_`-prefixed environment overrides.

The file is `--config`, else `$CARECAL_CONFIG`, else `config/carecal.toml`. An environment
variable names a key path with double underscores; tenants are addressed by their id:

    CARECAL_SERVER__PORT=8090
    CARECAL_DATABASE__URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test
    CARECAL_TENANTS__DEMO__WEBHOOK_SECRET=whsec_...

Secrets are `SecretStr`: they never print, and `describe()` masks them.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG = Path("config/carecal.toml")
ENV_PREFIX = "CARECAL_"
# Tenant ids name the embedded server's folders (`<tenant>~<member>`): no leading dot.
ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists (key, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {msg}" for key, msg in problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    webhook_tolerance_seconds: int = Field(300, ge=1, le=3600)
    graceful_shutdown_seconds: float = Field(10.0, ge=0)
    # Applied webhooks are deleted this long after they were applied (pending and failed ones
    # are kept); a `webhook-id` seen again after that is recorded as new. Longer than the host
    # retries a delivery (Standard Webhooks senders give up within about a day).
    keep_applied_webhooks_days: float = Field(7.0, gt=0)
    # The reverse proxies (addresses or networks) whose X-Forwarded-For names the client: the
    # claim, setup and staff pages limit requests per client address, which behind a proxy is
    # otherwise the proxy's, so one client would use up everyone's share (staff logins too).
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _ids_outlive_tolerance(self) -> ServerSettings:
        if self.keep_applied_webhooks_days * 86400 <= self.webhook_tolerance_seconds:
            # Else a webhook replayed within its signature's tolerance could be applied twice.
            raise ValueError(
                "keep_applied_webhooks_days must be longer than webhook_tolerance_seconds"
            )
        return self

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///var/carecal.db"

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value


class EmbeddedCalendarSettings(_Section):
    type: Literal["embedded"] = "embedded"
    folder: Path = Path("var/dav")
    poll_interval_seconds: float = Field(60, gt=0)


class CaldavCalendarSettings(_Section):
    """The municipality's own CalDAV server, written with one service account. Each view's
    collection is `url` + `collection_template`; the server's own sharing or rights give each
    member access to theirs. Nothing tells carecal of member writes there: it polls."""

    type: Literal["caldav"]
    url: str
    username: str
    password: SecretStr | None = None
    password_file: Path | None = None
    poll_interval_seconds: float = Field(60, gt=0)
    # Placeholders {tenant}, {member}, {citizen}, each one percent-encoded path segment. A
    # template with a "/" inside nests collections (the parent must exist or be creatable).
    collection_template: str = "{tenant}~{member}~{citizen}/"
    # The server kind whose known quirks apply: generic, radicale or xandikos.
    server: Literal["generic", "radicale", "xandikos"] = "generic"

    @model_validator(mode="after")
    def _one_password(self) -> CaldavCalendarSettings:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("set exactly one of password and password_file")
        if self.password_file is not None and not self.password_file.is_file():
            raise ValueError(f"password_file {self.password_file} is not a readable file")
        return self

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        if any(segment in (".", "..") for segment in unquote(urlsplit(value).path).split("/")):
            raise ValueError("must not have '.' or '..' in its path")
        return value if value.endswith("/") else value + "/"

    @field_validator("collection_template")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(tenant="t", member="m", citizen="c")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError("placeholders are {tenant}, {member} and {citizen}") from exc
        if "{citizen}" not in value or "{member}" not in value or value.startswith("/"):
            raise ValueError("must be relative and name {member} and {citizen}")
        if any(segment in (".", "..") for segment in value.split("/")):
            raise ValueError("must stay below `url`: no '.' or '..' segments")
        return value

    def service_password(self) -> str:
        """The service account's password, read from `password_file` when that is set."""
        if self.password is not None:
            return self.password.get_secret_value()
        assert self.password_file is not None
        return self.password_file.read_text(encoding="utf-8").strip()


CalendarSettings = Annotated[
    EmbeddedCalendarSettings | CaldavCalendarSettings, Field(discriminator="type")
]


class TenantSettings(_Section):
    id: str = Field(pattern=ID_PATTERN)
    # One secret, or several while the key is rotated: a webhook signed with any of them passes.
    webhook_secret: SecretStr | list[SecretStr]
    api_token: SecretStr
    host_events_url: str | None = None
    host_events_secret: SecretStr | None = None
    # Fernet key(s) encrypting members' external calendar passwords at rest; the first
    # encrypts, all decrypt (rotation). Without one the tenant cannot take `external` members.
    data_key: SecretStr | list[SecretStr] | None = None
    timezone: str = "Europe/Copenhagen"
    locale: Literal["da", "en"] = "da"
    allow_private_calendar_urls: bool = False
    # The staff dashboard's login (`/staff/login`); without it only `Authorization: Bearer
    # <api_token>` opens the dashboard. Changing it ends every staff session of the tenant.
    staff_password: SecretStr | None = None

    @field_validator("webhook_secret")
    @classmethod
    def _secrets_present(cls, value: SecretStr | list[SecretStr]) -> SecretStr | list[SecretStr]:
        from adapters.host.signing import InvalidSecret, decode_secret

        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError("at least one webhook secret is required")
        for secret in values:
            try:
                key = decode_secret(secret.get_secret_value())
            except InvalidSecret:
                raise ValueError("must be whsec_ followed by base64 (Standard Webhooks)") from None
            if len(key) < 16:
                raise ValueError("every webhook key must be at least 16 bytes")
        return value

    @field_validator("data_key")
    @classmethod
    def _fernet_keys(
        cls, value: SecretStr | list[SecretStr] | None
    ) -> SecretStr | list[SecretStr] | None:
        from adapters.crypto import valid_key

        values = [] if value is None else value if isinstance(value, list) else [value]
        if any(not valid_key(v.get_secret_value()) for v in values):
            raise ValueError(
                "must be a Fernet key: 32 url-safe base64-encoded bytes "
                '(python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key())")'
            )
        return value

    @field_validator("api_token")
    @classmethod
    def _long_token(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("staff_password")
    @classmethod
    def _long_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 12:
            raise ValueError("must be at least 12 characters")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown IANA time zone") from exc
        return value

    @model_validator(mode="after")
    def _events_secret(self) -> TenantSettings:
        if self.host_events_url and self.host_events_secret is None:
            raise ValueError("host_events_url needs host_events_secret")
        return self

    @property
    def data_keys(self) -> list[str]:
        if self.data_key is None:
            return []
        values = self.data_key if isinstance(self.data_key, list) else [self.data_key]
        return [v.get_secret_value() for v in values]

    @property
    def webhook_secrets(self) -> list[str]:
        values = (
            self.webhook_secret if isinstance(self.webhook_secret, list) else [self.webhook_secret]
        )
        return [v.get_secret_value() for v in values]


class WorkerSettings(_Section):
    poll_seconds: float = Field(1.0, gt=0)
    batch_size: int = Field(20, ge=1)
    lease_seconds: float = Field(120, gt=0)
    max_attempts: int = Field(10, ge=1)
    horizon_refresh_seconds: float = Field(3600, gt=0)
    # Jobs of one leased batch run at once, up to this many (each view sync is one job, so a
    # slow or dead calendar server holds up only its own views).
    concurrency: int = Field(8, ge=1)
    # Finished jobs are deleted once they were due this long ago (failed ones are kept).
    keep_done_jobs_hours: float = Field(24.0, gt=0)


class OutboxSettings(_Section):
    """Delivery of events to each tenant's `host_events_url` (`plugin.services.delivery`)."""

    poll_seconds: float = Field(1.0, gt=0)  # how often an idle worker looks for due events
    batch_size: int = Field(100, ge=1, le=1000)  # events leased at once at most
    concurrency: int = Field(8, ge=1, le=64)  # requests in flight per tenant (and its connections)
    timeout_seconds: float = Field(10.0, gt=0, le=300)  # per request: connect, send, answer
    backoff_base_seconds: float = Field(1.0, gt=0)  # first retry within this, then doubling
    backoff_max_seconds: float = Field(900.0, gt=0)  # the doubling stops here (15 min)
    dead_after_hours: float = Field(24.0, gt=0)  # undelivered this long: dead letter
    keep_delivered_days: float = Field(7.0, gt=0)  # delivered events are deleted after this

    @model_validator(mode="after")
    def _ordered(self) -> OutboxSettings:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError("backoff_max_seconds must be at least backoff_base_seconds")
        return self


class EscalationSettings(_Section):
    """`task.unfilled` for occurrences with free slots at their claim deadline."""

    interval_seconds: float = Field(60.0, gt=0)  # how often the worker looks for deadlines
    lookback_hours: float = Field(48.0, gt=0)  # deadlines older than this are not escalated


class StaffSettings(_Section):
    """The staff dashboard (`/staff/`)."""

    session_minutes: float = Field(120, gt=0, le=24 * 60)  # a login lasts this long
    at_risk_hours: float = Field(48, gt=0)  # free slots due within this are "at risk"


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    calendar: CalendarSettings = Field(default_factory=EmbeddedCalendarSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    staff: StaffSettings = Field(default_factory=StaffSettings)
    horizon_weeks: int = Field(8, ge=1, le=104)
    tenants: list[TenantSettings] = Field(default_factory=list)

    @field_validator("tenants")
    @classmethod
    def _unique_tenants(cls, value: list[TenantSettings]) -> list[TenantSettings]:
        seen: set[str] = set()
        tokens: dict[str, str] = {}
        for tenant in value:
            if tenant.id in seen:
                raise ValueError(f"tenant id {tenant.id!r} appears twice")
            seen.add(tenant.id)
            # A token names its tenant: one shared would open only one of them, and hand
            # the other's host its data.
            token = tenant.api_token.get_secret_value()
            if token in tokens:
                raise ValueError(
                    f"tenants {tokens[token]!r} and {tenant.id!r} have the same api_token"
                )
            tokens[token] = tenant.id
        return value

    def tenant(self, tenant_id: str) -> TenantSettings | None:
        return self._tenants_by_id.get(tenant_id)

    @functools.cached_property
    def _tenants_by_id(self) -> dict[str, TenantSettings]:
        # Looked up on every webhook; a frozen model can cache it.
        return {t.id: t for t in self.tenants}


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("CARECAL_CONFIG") or DEFAULT_CONFIG)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the TOML file (a missing default file means built-in defaults), apply the
    environment overrides and validate. Raises ConfigError naming every bad key."""
    resolved = config_path(path)
    raw: dict[str, Any] = {}
    if resolved.exists():
        try:
            raw = tomllib.loads(resolved.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([(str(resolved), f"not valid TOML: {exc}")]) from exc
    elif path is not None or "CARECAL_CONFIG" in os.environ:
        raise ConfigError([(str(resolved), "file not found")])
    apply_env_overrides(raw, os.environ if environ is None else environ)
    return validate_settings(raw)


def validate_settings(raw: Mapping[str, Any]) -> Settings:
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = [
            (_dotted(raw, err["loc"]), err["msg"])
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise ConfigError(problems) from None


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """`CARECAL_A__B=v` sets raw["a"]["b"] = "v", and `CARECAL_HORIZON_WEEKS=4` a top-level
    key; `CARECAL_TENANTS__<ID>__KEY` addresses the tenant with that id (case-insensitive),
    creating it if absent. A value that is a JSON list (`["10.0.0.1", "10.0.0.2"]`) is a
    list: a rotated secret, the trusted proxies."""
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if len(path) == 1 and path[0] not in Settings.model_fields:
            continue  # CARECAL_CONFIG and friends are not keys
        if path[0] == "tenants" and len(path) >= 3:
            tenants = raw.setdefault("tenants", [])
            tenant = next((t for t in tenants if str(t.get("id", "")).lower() == path[1]), None)
            if tenant is None:
                tenant = {"id": path[1]}
                tenants.append(tenant)
            _set(tenant, path[2:], value)
        else:
            _set(raw, path, value)


def _set(target: dict[str, Any], path: list[str], value: str) -> None:
    for key in path[:-1]:
        nested = target.get(key)
        if not isinstance(nested, dict):
            nested = {}
            target[key] = nested
        target = nested
    target[path[-1]] = _env_value(value)


def _env_value(value: str) -> str | list[Any]:
    """A JSON list stays a list; anything else is the string (pydantic converts it)."""
    if value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, list):
            return parsed
    return value


def _dotted(raw: Mapping[str, Any], loc: tuple[int | str, ...]) -> str:
    """('tenants', 0, 'api_token') -> 'tenants[demo].api_token' where the tenant has an id."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            label = str(item)
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                label = str(node[item].get("id", item))
            parts[-1:] = [f"{parts[-1]}[{label}]"] if parts else [f"[{label}]"]
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            if item in ("embedded", "caldav") and parts and parts[-1] == "calendar":
                continue  # discriminated-union tag: not a key the user wrote
            parts.append(str(item))
            node = node.get(item) if isinstance(node, Mapping) else None
    return ".".join(parts) or "(root)"


def describe(settings: Settings) -> dict[str, Any]:
    """The effective settings for display, every secret masked: SecretStr fields, and the
    password and secret-looking query values in a URL (a database URL's password, a host
    URL's `?key=`)."""
    dumped: dict[str, Any] = settings.model_dump(mode="json")  # SecretStr: "**********"
    masked = _masked_urls(dumped)
    assert isinstance(masked, dict)
    return masked


MASK = "**********"
_SECRET_QUERY = ("key", "token", "secret", "pass", "pwd", "sig", "auth", "code")


def _masked_urls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _masked_urls(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked_urls(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


def mask_url(url: str) -> str:
    """`mask_url("postgresql://carecal:pw@db/carecal")` -> "postgresql://carecal:**********@db/carecal";
    query values whose names look secret (`?key=`, `?token=`) masked too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(any(word in name.lower() for word in _SECRET_QUERY) for name, _ in pairs):
            query = urlencode(
                [
                    (name, MASK if any(w in name.lower() for w in _SECRET_QUERY) else item)
                    for name, item in pairs
                ],
                safe="*",
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

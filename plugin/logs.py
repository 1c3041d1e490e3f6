"""Structured logging: one JSON object a line, with the request id of the request in flight.

Configured once by the CLI (`configure`), never at import. Log records carry only what is
passed in `extra=`; callers pass ids, never names, e-mail addresses, tokens or secrets.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("carecal_request_id", default=None)

# Attributes every LogRecord has; anything else came from `extra=` and is logged as a field.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = {
            k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        }
        request_id = request_id_var.get()
        prefix = f"[{request_id}] " if request_id else ""
        tail = " ".join(f"{k}={v}" for k, v in extras.items())
        line = f"{record.levelname:<7} {record.name}: {prefix}{record.getMessage()} {tail}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


def _not_routine_root_record(record: logging.LogRecord) -> bool:
    """Drops what libraries log straight to the root logger below WARNING: caldav logs a whole
    answer it cannot parse there at INFO (a member's server decides what that holds, and how
    much of it). carecal's own loggers all have names."""
    return record.name != "root" or record.levelno >= logging.WARNING


OWN_LOGGERS = ("plugin", "adapters", "bench")


def configure(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_not_routine_root_record)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # DEBUG is carecal's own: the libraries' debug logs carry personal data (aiosqlite and
    # SQLAlchemy every statement's values, Radicale and the HTTP clients every body).
    debugging = logging.getLevelName(level) == logging.DEBUG
    root.setLevel(logging.INFO if debugging else level)
    for own in OWN_LOGGERS:
        logging.getLogger(own).setLevel(logging.DEBUG if debugging else logging.NOTSET)
    # uvicorn's own access log would print raw paths, which carry claim and feed tokens.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request with its full URL at INFO; a host_events_url may carry a token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The embedded Radicale says every request, login and setting at INFO: carecal's own
    # access log already has each request (by route), so only its warnings.
    logging.getLogger("radicale").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True

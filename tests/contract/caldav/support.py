"""Helpers shared by the calendar port contract tests (kept out of conftest so tests can
import them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters.caldav.client import CalDAVSettings

USER, PASSWORD = "carecal", "s3cret"


@dataclass(frozen=True)
class Server:
    kind: str
    settings: CalDAVSettings

    def home(self, member: str) -> str:
        """Where a member's view collections live. Radicale: one home per user, which need not
        exist yet; Xandikos --defaults: one user, whose home always exists."""
        return f"/{member}/" if self.kind == "radicale" else "/user/calendars/"


@dataclass
class Requests:
    """What the client sent, seen from its own session (niquests hooks); the server is real."""

    sent: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status
    in_flight: int = 0
    max_in_flight: int = 0

    def clear(self) -> None:
        self.sent.clear()
        self.max_in_flight = 0

    async def before(self, request: Any, **_: Any) -> Any:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return request

    async def after(self, response: Any, **_: Any) -> Any:
        self.in_flight -= 1
        path = str(response.request.url).split("/", 3)[-1]
        self.sent.append((str(response.request.method), "/" + path, int(response.status_code)))
        return response

    def hooks(self) -> dict[str, list[Any]]:
        return {"pre_send": [self.before], "response": [self.after]}

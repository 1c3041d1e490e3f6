"""What the host asks of carecal, as plain values the services act on.

The web layer validates a webhook with pydantic and turns it into one of these; the services
never see pydantic or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from plugin.domain.model import Circle, Task


@dataclass(frozen=True, slots=True)
class UpdateCircle:
    circle: Circle


@dataclass(frozen=True, slots=True)
class UpsertTask:
    task: Task


@dataclass(frozen=True, slots=True)
class CancelTask:
    task_id: str
    citizen_id: str
    version: int


@dataclass(frozen=True, slots=True)
class AssignVisit:
    """A staff visit: a task of kind `visit` held by `task.assigned_member_id`."""

    task: Task


@dataclass(frozen=True, slots=True)
class DecideRelief:
    request_id: str
    citizen_id: str
    version: int
    status: Literal["approved", "rejected"]
    visits: tuple[Task, ...] = ()


HostCommand = UpdateCircle | UpsertTask | CancelTask | AssignVisit | DecideRelief

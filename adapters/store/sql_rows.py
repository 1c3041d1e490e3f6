"""Rows to domain values and back: the only place that knows how columns encode fields.

member_values("north", ANNA, cipher)  -> {"name": "Anna", ..., "availability": [...]}
member_from_row("north", row, cipher)  -> Member(id="m-anna", ...)
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any, Protocol

from plugin.domain.model import (
    AvailabilityWindow,
    Capacity,
    ExternalCalendar,
    Member,
    Task,
    TaskStatus,
)
from plugin.services.ports import StoreError


class Cipher(Protocol):
    """Symmetric encryption for secrets at rest (members' external calendar passwords), with
    one key per tenant."""

    def encrypt(self, tenant_id: str, plaintext: bytes) -> bytes: ...

    def decrypt(self, tenant_id: str, ciphertext: bytes) -> bytes: ...


def member_values(tenant_id: str, member: Member, cipher: Cipher | None) -> dict[str, Any]:
    external = member.external
    password: bytes | None = None
    if external is not None:
        if cipher is None:
            raise StoreError(
                "refusing to store an external calendar password without a cipher "
                "(give SqlStore a `cipher`)"
            )
        password = cipher.encrypt(tenant_id, external.password.encode())
    return {
        "name": member.name,
        "email": member.email,
        "role": member.role,
        "visibility": member.visibility,
        "locale": member.locale,
        "calendar": member.calendar,
        "external_url": external.url if external else None,
        "external_username": external.username if external else None,
        "external_password_enc": password,
        "capacity_hours": member.capacity.hours_per_week,
        "capacity_tasks": member.capacity.tasks_per_week,
        "availability": [
            {"weekday": w.weekday, "start": w.start.isoformat(), "end": w.end.isoformat()}
            for w in member.availability
        ],
        "paused_until": member.paused_until,
    }


def member_from_row(tenant_id: str, row: Any, cipher: Cipher | None) -> Member:
    external = None
    if row.external_url is not None:
        if cipher is None:
            raise StoreError("cannot read an external calendar password without a cipher")
        external = ExternalCalendar(
            url=row.external_url,
            username=row.external_username or "",
            password=cipher.decrypt(tenant_id, row.external_password_enc or b"").decode(),
        )
    paused: date | None = row.paused_until
    return Member(
        id=row.member_id,
        name=row.name,
        role=row.role,
        visibility=row.visibility,
        locale=row.locale,
        email=row.email,
        calendar=row.calendar,
        capacity=Capacity(hours_per_week=row.capacity_hours, tasks_per_week=row.capacity_tasks),
        availability=tuple(
            AvailabilityWindow(
                weekday=w["weekday"],
                start=time.fromisoformat(w["start"]),
                end=time.fromisoformat(w["end"]),
            )
            for w in row.availability
        ),
        paused_until=paused,
        external=external,
    )


def task_values(task: Task) -> dict[str, Any]:
    """Every column but the key."""
    return {
        "citizen_id": task.citizen_id,
        "version": task.version,
        "kind": task.kind,
        "category": task.category,
        "start_local": task.start,
        "end_local": task.end,
        "timezone": task.timezone,
        "people_needed": task.people_needed,
        "details": task.details,
        "location": task.location,
        "recurrence": task.recurrence,
        "exdates": [d.isoformat() for d in task.exdates],
        "rdates": [d.isoformat() for d in task.rdates],
        "claim_deadline_hours": task.claim_deadline_hours,
        "status": task.status.value,
        "assigned_member_id": task.assigned_member_id,
    }


def task_from_row(row: Any) -> Task:
    return Task(
        tenant_id=row.tenant_id,
        id=row.id,
        citizen_id=row.citizen_id,
        version=row.version,
        kind=row.kind,
        category=row.category,
        start=row.start_local,
        end=row.end_local,
        timezone=row.timezone,
        people_needed=row.people_needed,
        details=row.details,
        location=row.location,
        recurrence=row.recurrence,
        exdates=tuple(datetime.fromisoformat(d) for d in row.exdates),
        rdates=tuple(datetime.fromisoformat(d) for d in row.rdates),
        claim_deadline_hours=row.claim_deadline_hours,
        status=TaskStatus(row.status),
        assigned_member_id=row.assigned_member_id,
    )

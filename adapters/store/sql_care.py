"""Rows of the capacity tables (issue #6) to domain values and back.

    settings_values(settings)   -> {"member_values": {...}, "host_values": {...}, ...}
    settings_from_row(row)      -> MemberSettings(...)

Capacity values are JSON: `{"hours_per_week": 2.0, "tasks_per_week": null, "availability":
[{"weekday": 1, "start": "16:00:00", "end": "20:00:00"}], "paused_until": "2027-03-20"}`.
"""

from __future__ import annotations

from datetime import date, time
from typing import Any, cast

from plugin.domain.capacity import FIELDS, CareField, CareValues, MemberSettings
from plugin.domain.model import AvailabilityWindow, Capacity

__all__ = ["care_from_json", "care_json", "settings_from_row", "settings_values"]


def care_json(values: CareValues) -> dict[str, Any]:
    return {
        "hours_per_week": values.capacity.hours_per_week,
        "tasks_per_week": values.capacity.tasks_per_week,
        "availability": [
            {"weekday": w.weekday, "start": w.start.isoformat(), "end": w.end.isoformat()}
            for w in values.availability
        ],
        "paused_until": None if values.paused_until is None else values.paused_until.isoformat(),
    }


def care_from_json(data: dict[str, Any]) -> CareValues:
    paused = data.get("paused_until")
    hours = data.get("hours_per_week")
    return CareValues(
        capacity=Capacity(
            hours_per_week=None if hours is None else float(hours),
            tasks_per_week=data.get("tasks_per_week"),
        ),
        availability=tuple(
            AvailabilityWindow(
                weekday=int(w["weekday"]),
                start=time.fromisoformat(w["start"]),
                end=time.fromisoformat(w["end"]),
            )
            for w in data.get("availability", [])
        ),
        paused_until=None if paused is None else date.fromisoformat(paused),
    )


def settings_values(settings: MemberSettings) -> dict[str, Any]:
    return {
        "tenant_id": settings.tenant_id,
        "citizen_id": settings.citizen_id,
        "member_id": settings.member_id,
        "member_values": care_json(settings.values),
        "host_values": care_json(settings.host),
        "fields": [f for f in FIELDS if f in settings.fields],  # a stable order
        "circle_version": settings.circle_version,
        "set_at": settings.set_at,
    }


def settings_from_row(row: Any) -> MemberSettings:
    return MemberSettings(
        tenant_id=row.tenant_id,
        citizen_id=row.citizen_id,
        member_id=row.member_id,
        values=care_from_json(row.member_values),
        host=care_from_json(row.host_values),
        fields=frozenset(cast(CareField, f) for f in row.fields if f in FIELDS),
        circle_version=row.circle_version,
        set_at=row.set_at,
    )

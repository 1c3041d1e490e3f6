"""Read models for the API and the staff tools."""

from __future__ import annotations

from dataclasses import dataclass

from plugin.domain.model import Circle, OccurrenceRecord, Task
from plugin.services.ports import Store


@dataclass(frozen=True, slots=True)
class TaskView:
    task: Task
    occurrences: tuple[OccurrenceRecord, ...]


async def read_circle(store: Store, tenant_id: str, citizen_id: str) -> Circle | None:
    async with store.transaction() as tx:
        return await tx.get_circle(tenant_id, citizen_id)


async def read_task(store: Store, tenant_id: str, task_id: str) -> TaskView | None:
    async with store.transaction() as tx:
        task = await tx.get_task(tenant_id, task_id)
        if task is None:
            return None
        occurrences = await tx.get_occurrences(tenant_id, task_id)
    return TaskView(task, tuple(occurrences))

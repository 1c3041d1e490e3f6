from datetime import datetime

import pytest

from plugin.domain.circle import can_see_details, eligible_for, visible_members
from plugin.domain.model import Circle, Citizen, Member, Role, Task, TaskKind

ANNA = Member("m-anna", "Anna", "relative", "full")
OLE = Member("m-ole", "Ole", "network", "limited")
SARA = Member("m-sara", "Sara", "staff", "full")
KIM = Member("m-kim", "Kim", "staff", "limited")


def task(kind: TaskKind, assigned: str | None = None) -> Task:
    start = datetime(2027, 3, 24, 9)
    return Task(
        "demo", "v-9", "c-123", 1, kind, "visit", start, start, "Europe/Copenhagen",
        assigned_member_id=assigned,
    )  # fmt: skip


def test_visible_members_are_the_circle_in_host_order_once_each() -> None:
    circle = Circle(Citizen("demo", "c-123", "Fru Jensen"), 3, (ANNA, OLE, SARA))
    assert visible_members(circle) == (ANNA, OLE, SARA)
    twice = Circle(circle.citizen, 4, (ANNA, Member("m-anna", "Anna B", "relative", "limited")))
    assert visible_members(twice) == (ANNA,)
    assert visible_members(Circle(circle.citizen, 5)) == ()


def test_only_full_visibility_sees_details() -> None:
    assert can_see_details(ANNA) and can_see_details(SARA)
    assert not can_see_details(OLE) and not can_see_details(KIM)


@pytest.mark.parametrize("kind", ["task", "relief"])
@pytest.mark.parametrize("role", ["relative", "network", "staff"])
def test_tasks_and_relief_are_open_to_every_role(kind: TaskKind, role: Role) -> None:
    assert eligible_for(Member("m-x", "X", role, "limited"), task(kind))


def test_a_visit_belongs_to_its_assigned_staff_member_only() -> None:
    visit = task("visit", assigned="m-sara")
    assert eligible_for(SARA, visit)
    assert not eligible_for(KIM, visit)
    assert not eligible_for(ANNA, visit)
    # A relative who somehow carries the staff member's id is still not staff.
    assert not eligible_for(Member("m-sara", "Sara", "relative", "full"), visit)
    assert not eligible_for(SARA, task("visit"))

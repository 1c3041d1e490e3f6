"""Consent and visibility within a circle: who is in it, who sees details, who may claim what.

The citizen decides (DESIGN.md principle 1); the host delivers that decision as the whole
circle in every `circle.updated`, so a member absent from the circle has been removed and gets
nothing. These rules only read the circle; they never widen what the host sent.
"""

from __future__ import annotations

from plugin.domain.model import Circle, Member, Role, Task

__all__ = ["CLAIMING_ROLES", "can_see_details", "eligible_for", "visible_members"]

# Who may take a `task` or `relief` slot. A `visit` is staff work assigned by the host.
CLAIMING_ROLES: frozenset[Role] = frozenset({"relative", "network", "staff"})


def visible_members(circle: Circle) -> tuple[Member, ...]:
    """The members who see the circle's calendar, in the host's order.

    The store marks removed members and does not put them in a `Circle`, so this is the
    circle's members; a member id the host listed twice counts once (the first entry wins).
    """
    seen: set[str] = set()
    members: list[Member] = []
    for member in circle.members:
        if member.id not in seen:
            seen.add(member.id)
            members.append(member)
    return tuple(members)


def can_see_details(member: Member) -> bool:
    """Only `full` visibility shows a task's details; `limited` sees category and time."""
    return member.visibility == "full"


def eligible_for(member: Member, task: Task) -> bool:
    """May `member` hold a slot of `task`?

    `task` and `relief`: any member of the circle (relative, network, staff). `visit`: not
    offered to anyone; only the staff member it is assigned to holds it.
    """
    if task.kind == "visit":
        return member.role == "staff" and member.id == task.assigned_member_id
    return member.role in CLAIMING_ROLES

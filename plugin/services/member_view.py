"""What one member sees of one circle: their copy of every occurrence in the window.

Both the CalDAV view sync (`view_sync._desired`) and the ICS feed (`feed`) render a member's
view through `render_member_view`, so the calendar app and the feed always agree.

Which occurrences a member sees: every occurrence of the circle's tasks inside the window
(from `LOOKBACK` ago to `now + horizon`). An occurrence the store marked cancelled while its
task is still active was moved or dropped by a changed rule (a moved one-off task gets a new
occurrence id), so it leaves the view; a cancelled task stays as `[Aflyst]` until the window
passes it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from icalendar import Calendar

from plugin.domain.model import Circle, Member, OccurrenceRecord, Task, TaskStatus
from plugin.services.capacity import LOOKBACK as CAPACITY_LOOKBACK
from plugin.services.capacity import CircleCare, ViewAdvice, view_advice
from plugin.services.occurrences import LOOKBACK
from plugin.sync.render import RenderInput, render_event

__all__ = [
    "HISTORY",
    "member_advice",
    "member_view_inputs",
    "organizer_address",
    "render_member_view",
]

# What a member's view is rendered from of the past: its copies start after `now - LOOKBACK`,
# and the fairness advice looks at what members held up to `capacity.LOOKBACK` back. The store
# keeps every past occurrence; a view's cost must not grow with the circle's age, so readers
# ask only for the occurrences that ended after `now - HISTORY`.
HISTORY = max(LOOKBACK, CAPACITY_LOOKBACK)


def organizer_address(public_url: str) -> str:
    """`organizer_address("https://omsorg.aarhus.dk")` is "noreply@omsorg.aarhus.dk"."""
    return f"noreply@{urlsplit(public_url).hostname or 'localhost'}"


def render_member_view(
    circle: Circle,
    member: Member,
    tasks: Sequence[Task],
    occurrences: Mapping[str, Sequence[OccurrenceRecord]],
    *,
    claim_link: Callable[[str], str],
    organizer: str,
    domain: str,
    horizon: timedelta,
    now: datetime,
    stamp: datetime | None = None,
    care: CircleCare | None = None,
) -> list[Calendar]:
    """One VCALENDAR per occurrence `member` sees, in task then occurrence order (see
    `member_view_inputs`)."""
    return [
        render_event(inp)
        for inp in member_view_inputs(
            circle,
            member,
            tasks,
            occurrences,
            claim_link=claim_link,
            organizer=organizer,
            domain=domain,
            horizon=horizon,
            now=now,
            stamp=stamp,
            care=care,
        )
    ]


def member_view_inputs(
    circle: Circle,
    member: Member,
    tasks: Sequence[Task],
    occurrences: Mapping[str, Sequence[OccurrenceRecord]],
    *,
    claim_link: Callable[[str], str],
    organizer: str,
    domain: str,
    horizon: timedelta,
    now: datetime,
    stamp: datetime | None = None,
    care: CircleCare | None = None,
    advice: ViewAdvice | None = None,
    only: Collection[str] | None = None,
) -> list[RenderInput]:
    """What each copy `member` sees is rendered from, one per occurrence, in task then
    occurrence order.

    `occurrences` are by task id; `claim_link(occurrence_id)` is the member's claim link;
    `stamp` (DTSTAMP) defaults to `now`. With `care` (`capacity.read_circle_care`), offers
    suggested to the member and what they hold over their capacity are marked
    (`member_advice`), or as `advice` says when it is given. `only`: the copies of these
    occurrence ids alone (of the ones the member sees).
    """
    window_start = now - LOOKBACK
    window_end = now + horizon
    if advice is None:
        advice = member_advice(
            circle, member, tasks, occurrences, horizon=horizon, now=now, care=care
        )
    names = {m.id: m.name for m in circle.members}
    copies: list[RenderInput] = []
    for task in tasks:
        for record in occurrences.get(task.id, ()):
            occurrence = record.occurrence
            if only is not None and occurrence.id not in only:
                continue
            if occurrence.cancelled and task.status is TaskStatus.ACTIVE:
                continue
            if occurrence.end.astimezone(UTC) <= window_start or occurrence.start > window_end:
                continue
            copies.append(
                RenderInput(
                    record=record,
                    task=task,
                    member=member,
                    holder_names=names,
                    claim_link=claim_link(occurrence.id),
                    organizer=organizer,
                    domain=domain,
                    sequence=task.version,
                    stamp=now if stamp is None else stamp,
                    suggested=occurrence.id in advice.suggested,
                    overloaded=occurrence.id in advice.overloaded,
                )
            )
    return copies


def member_advice(
    circle: Circle,
    member: Member,
    tasks: Sequence[Task],
    occurrences: Mapping[str, Sequence[OccurrenceRecord]],
    *,
    horizon: timedelta,
    now: datetime,
    care: CircleCare | None,
    only: Collection[str] | None = None,
) -> ViewAdvice:
    """The marks of `member`'s copies (`capacity.view_advice` over their window; none
    without `care`); `only`: of these occurrences alone."""
    if care is None:
        return ViewAdvice()
    until = now + horizon
    return view_advice(circle, member.id, tasks, occurrences, care, now=now, until=until, only=only)

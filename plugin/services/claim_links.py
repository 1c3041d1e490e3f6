"""Claim, release or pass through a member's personal claim link (`/c/{token}`).

`open_claim_page` reads what the page shows; `act_through_link` does what the member asked with
exactly the resolution of a CalDAV gesture: `claiming.decide` with channel "link" in one
transaction (row lock, audit, `task.claimed`/`task.released` in the outbox), and — when a claim
came or went — a sync of every hosted view of the circle queued in that same transaction
(the member's own copy included: unlike a CalDAV gesture, no sync run of theirs is under way).

A token opens nothing (`Refusal`) when it is unknown or forged, when the member's links were
revoked, when the member is no longer in the occurrence's circle (consent withdrawn: refused
at once, whatever the link's state), or when the occurrence has ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from plugin.domain.circle import eligible_for
from plugin.domain.claims import ClaimOutcome
from plugin.domain.model import Circle, Member, OccurrenceRecord, Task
from plugin.services.claiming import Ask, decide
from plugin.services.links import LinkKind, Refusal, resolve
from plugin.services.ports import MemberLink, Store, Tx
from plugin.services.view_sync import enqueue_view_syncs
from plugin.sync.render import Relation, RenderInput, relation_of

__all__ = ["ClaimPage", "Refused", "act_through_link", "asks_for", "open_claim_page"]


@dataclass(frozen=True, slots=True)
class ClaimPage:
    """Everything the claim page shows, read in one transaction."""

    token: str
    link: MemberLink
    circle: Circle
    member: Member
    task: Task
    record: OccurrenceRecord
    relation: Relation
    passed: bool  # the member said "not me" and has not claimed since

    @property
    def holder_names(self) -> tuple[str, ...]:
        """Names of the others holding it (names only: DESIGN.md principle 5)."""
        names = {m.id: m.name for m in self.circle.members}
        return tuple(
            names.get(claim.member_id, "")
            for claim in self.record.claims
            if claim.member_id != self.member.id
        )


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Refusal
    locale: str | None = None  # the member's, when known (the page is in their language)


def asks_for(page: ClaimPage) -> tuple[Ask, ...]:
    """The buttons that make sense now: claim an offer, release what one holds, pass on
    something one could take. Nothing on a cancelled occurrence."""
    eligible = eligible_for(page.member, page.task)
    match page.relation:
        case Relation.CANCELLED:
            return ()
        case Relation.HOLDS:
            return (Ask.RELEASE,)
        case Relation.OFFERED:
            return (Ask.CLAIM,) if page.passed else (Ask.CLAIM, Ask.PASS)
        case Relation.TAKEN:
            return (Ask.PASS,) if eligible and not page.passed else ()


async def open_claim_page(store: Store, token: str, *, now: datetime) -> ClaimPage | Refused:
    async with store.transaction() as tx:
        return await _read(tx, token, now=now)


async def act_through_link(
    store: Store, token: str, ask: Ask, *, now: datetime
) -> tuple[ClaimPage | Refused, ClaimOutcome | None]:
    """Do what the member asked; the page as it is afterwards and the decision's outcome
    (None when nothing was decided: the link opens nothing, or a claim the member's role
    does not allow, like a visit)."""
    async with store.transaction() as tx:
        page = await _read(tx, token, now=now)
        if isinstance(page, Refused):
            return page, None
        if ask is Ask.CLAIM and not eligible_for(page.member, page.task):
            return page, None
        tenant_id = page.link.tenant_id
        occurrence_id = page.record.occurrence.id
        decision = await decide(
            tx, tenant_id, occurrence_id, page.member.id, ask, channel="link", now=now
        )
        if decision is None:  # cannot happen inside this transaction; be explicit anyway
            return Refused(Refusal.UNKNOWN, page.member.locale), None
        if decision.changed:
            # A pass too: the member is no longer in the offer's pool, and the others'
            # suggestions (`[Forslag]`) may move to someone else.
            await enqueue_view_syncs(tx, tenant_id, page.circle, now=now)
        after = await _read(tx, token, now=now)
    return after, decision.outcome


async def _read(tx: Tx, token: str, *, now: datetime) -> ClaimPage | Refused:
    resolved = await resolve(tx, token, LinkKind.CLAIM)
    if isinstance(resolved, Refusal):
        return Refused(resolved)
    link, occurrence_id = resolved
    record = await tx.get_occurrence(link.tenant_id, occurrence_id)
    task = None if record is None else await tx.get_task(link.tenant_id, record.occurrence.task_id)
    if record is None or task is None:
        return Refused(Refusal.UNKNOWN)
    circle = await tx.get_circle(link.tenant_id, task.citizen_id)
    member = None if circle is None else circle.member(link.member_id)
    if circle is None or member is None:
        return Refused(Refusal.REMOVED)
    if record.occurrence.end.astimezone(UTC) <= now:
        return Refused(Refusal.OVER, member.locale)
    relation = relation_of(
        RenderInput(
            record=record,
            task=task,
            member=member,
            holder_names={},
            claim_link="",
            organizer="",
            domain=link.tenant_id,
            sequence=task.version,
            stamp=now,
        )
    )
    passed = any(p.member_id == member.id for p in record.passes)
    return ClaimPage(token, link, circle, member, task, record, relation, passed)

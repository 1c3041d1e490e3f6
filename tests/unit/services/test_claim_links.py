"""The claim page's use cases on the in-memory store: what it offers in each state, and that
acting through it is a `decide` with channel "link" that queues the right view syncs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from adapters.memory import MemoryStore
from plugin.domain.claims import ClaimOutcome
from plugin.domain.model import Circle, Citizen, Member, Occurrence, Task, TaskKind, TaskStatus
from plugin.services.claim_links import (
    ClaimPage,
    Refused,
    act_through_link,
    asks_for,
    open_claim_page,
)
from plugin.services.claiming import Ask
from plugin.services.links import Refusal, claim_token, ensure_link
from plugin.sync.render import Relation

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
START = datetime(2027, 3, 23, 10, tzinfo=ZoneInfo("Europe/Copenhagen"))
ANNA = Member("m-anna", "Anna", "relative", "full", calendar="hosted")
BO = Member("m-bo", "Bo", "network", "limited", locale="en", calendar="feed")
SARA = Member("m-sara", "Sara", "staff", "full", calendar="hosted")
CITIZEN = Citizen("north", "c-123", "Fru Jensen")


TASK = Task("north", "t-1", "c-123", 1, "task", "shopping", START.replace(tzinfo=None),
            START.replace(tzinfo=None) + timedelta(hours=1), "Europe/Copenhagen")  # fmt: skip


async def seeded(kind: TaskKind = "task", people: int = 1) -> MemoryStore:
    store = MemoryStore()
    task = replace(TASK, kind=kind, people_needed=people)
    if kind == "visit":
        task = replace(task, assigned_member_id="m-sara")
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_circle("north", Circle(CITIZEN, 1, (ANNA, BO, SARA)), NOW)
        await tx.save_task(task)
        await tx.sync_occurrences(
            "north", "t-1", [Occurrence("o-1", "t-1", START, START + timedelta(hours=1))]
        )
    return store


async def token_of(store: MemoryStore, member_id: str) -> str:
    async with store.transaction() as tx:
        return claim_token(await ensure_link(tx, "north", member_id, now=NOW), "o-1")


async def page_of(store: MemoryStore, member_id: str) -> ClaimPage:
    page = await open_claim_page(store, await token_of(store, member_id), now=NOW)
    assert isinstance(page, ClaimPage)
    return page


async def queued_views(store: MemoryStore) -> list[str]:
    jobs = await store.lease_jobs("t", now=NOW + timedelta(days=1), limit=50, lease_seconds=9)
    for job in jobs:
        await store.finish_job(job.id, "t")
    return sorted(str(job.payload["member_id"]) for job in jobs if job.kind == "view.sync")


async def test_the_buttons_follow_the_members_relation() -> None:
    store = await seeded()
    anna = await page_of(store, "m-anna")
    assert (anna.relation, asks_for(anna)) == (Relation.OFFERED, (Ask.CLAIM, Ask.PASS))

    after, outcome = await act_through_link(store, anna.token, Ask.CLAIM, now=NOW)
    assert outcome is ClaimOutcome.CLAIMED
    assert isinstance(after, ClaimPage)
    assert (after.relation, asks_for(after)) == (Relation.HOLDS, (Ask.RELEASE,))
    bo = await page_of(store, "m-bo")
    assert (bo.relation, asks_for(bo), bo.holder_names) == (Relation.TAKEN, (Ask.PASS,), ("Anna",))

    after, outcome = await act_through_link(store, bo.token, Ask.PASS, now=NOW)
    assert outcome is ClaimOutcome.PASSED
    assert isinstance(after, ClaimPage) and after.passed and asks_for(after) == ()

    await act_through_link(store, anna.token, Ask.RELEASE, now=NOW)
    bo = await page_of(store, "m-bo")
    assert (bo.relation, asks_for(bo)) == (Relation.OFFERED, (Ask.CLAIM,))  # passed already


async def test_a_cancelled_occurrence_offers_nothing() -> None:
    store = await seeded()
    async with store.transaction() as tx:
        task = await tx.get_task("north", "t-1")
        assert task is not None
        await tx.save_task(replace(task, status=TaskStatus.CANCELLED))
    page = await page_of(store, "m-anna")
    assert (page.relation, asks_for(page)) == (Relation.CANCELLED, ())


async def test_a_claim_through_a_link_is_a_link_claim_and_syncs_every_hosted_view() -> None:
    store = await seeded()
    await queued_views(store)
    token = await token_of(store, "m-bo")
    page, outcome = await act_through_link(store, token, Ask.CLAIM, now=NOW)
    assert outcome is ClaimOutcome.CLAIMED
    assert isinstance(page, ClaimPage)
    assert [(c.member_id, c.channel) for c in page.record.claims] == [("m-bo", "link")]
    assert await queued_views(store) == ["m-anna", "m-sara"]  # Bo has a feed: no view
    events = await store.due_outbox(now=NOW, limit=10)
    assert [(e.type, e.data["channel"]) for e in events] == [("task.claimed", "link")]
    async with store.transaction() as tx:
        audit = await tx.list_audit("north", "occurrence:o-1")
    assert [(a.actor, a.action, a.channel) for a in audit] == [("m-bo", "occurrence.claim", "link")]

    # The same again changes nothing and queues nothing.
    _, outcome = await act_through_link(store, token, Ask.CLAIM, now=NOW)
    assert outcome is ClaimOutcome.ALREADY_HELD
    assert await queued_views(store) == []
    # Too late for Anna: first come, first served.
    _, outcome = await act_through_link(store, await token_of(store, "m-anna"), Ask.CLAIM, now=NOW)
    assert outcome is ClaimOutcome.FULL


async def test_a_pass_syncs_every_hosted_view() -> None:
    """Anna's copy reads DECLINED, and she leaves the offer's pool: whom the others' copies
    suggest (`[Forslag]`) may change. No event for the host."""
    store = await seeded()
    await queued_views(store)
    _, outcome = await act_through_link(store, await token_of(store, "m-anna"), Ask.PASS, now=NOW)
    assert outcome is ClaimOutcome.PASSED
    assert await queued_views(store) == ["m-anna", "m-sara"]  # Bo has a feed: no view
    assert await store.due_outbox(now=NOW, limit=10) == []


async def test_a_visit_cannot_be_claimed_by_a_relative() -> None:
    store = await seeded(kind="visit")
    page, outcome = await act_through_link(
        store, await token_of(store, "m-anna"), Ask.CLAIM, now=NOW
    )
    assert outcome is None
    assert isinstance(page, ClaimPage) and page.record.claims == ()
    assert asks_for(page) == ()


async def test_links_refuse_when_over_removed_or_revoked() -> None:
    store = await seeded()
    token = await token_of(store, "m-bo")
    over = await open_claim_page(store, token, now=START + timedelta(hours=1))
    assert over == Refused(Refusal.OVER, "en")
    assert isinstance(await open_claim_page(store, token, now=START), ClaimPage)  # under way

    async with store.transaction() as tx:
        await tx.save_circle("north", Circle(CITIZEN, 2, (ANNA, SARA)), NOW)
    assert await open_claim_page(store, token, now=NOW) == Refused(Refusal.REMOVED)
    page, outcome = await act_through_link(store, token, Ask.CLAIM, now=NOW)
    assert (page, outcome) == (Refused(Refusal.REMOVED), None)

    anna = await token_of(store, "m-anna")
    async with store.transaction() as tx:
        await tx.revoke_member_link("north", "m-anna", now=NOW)
    assert await open_claim_page(store, anna, now=NOW) == Refused(Refusal.REVOKED)
    assert await open_claim_page(store, "nonsense", now=NOW) == Refused(Refusal.UNKNOWN)

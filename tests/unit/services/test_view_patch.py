"""A member's gesture re-keys only the copies it changed (`view_sync._desired` with the copies
as recorded): the same copies, keys and advice marks as rendering the whole view again, on the
in-memory store. The real servers run the same path end to end in
`tests/integration/caldav/test_view_sync.py`."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.memory import MemoryStore
from plugin.config import Settings
from plugin.domain.model import Capacity, Circle, Citizen, Claim, Member, Task
from plugin.services import view_sync
from plugin.services.calendars import View
from plugin.services.capacity import ViewAdvice
from plugin.services.claiming import Ask, decide
from plugin.services.ingest import materialise
from plugin.sync.planner import DesiredItem, SyncRecord
from plugin.sync.render import event_uid
from tests.integration.support import make_settings

T = "north"
NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)  # Monday 1 March, 10:00 in Copenhagen
HORIZON = timedelta(weeks=8)
# With no one holding anything, Anna has more room than Bo: the offers are suggested to her.
ANNA = Member("m-anna", "Anna", "relative", "full", capacity=Capacity(3.0, 2), calendar="hosted")
BO = Member("m-bo", "Bo", "relative", "full", capacity=Capacity(1.0, 1), calendar="hosted")
CIRCLE = Circle(Citizen(T, "c-1", "Fru Jensen"), 1, (ANNA, BO))
VIEW = View(T, "m-anna", "c-1")


def _daily(task_id: str, first: datetime, count: int) -> Task:
    return Task(T, task_id, "c-1", 1, "task", "shopping", first, first + timedelta(hours=1),
                "Europe/Copenhagen", recurrence=f"FREQ=DAILY;COUNT={count}")  # fmt: skip


async def _store(
    first: datetime = datetime(2027, 3, 2), days: int = 40, now: datetime = NOW
) -> MemoryStore:
    """Two daily tasks (10:00 and 15:00) from the day `first`, materialised as at `now`."""
    store = MemoryStore()
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        await tx.save_circle(T, CIRCLE, now)
        for task in (_daily("t-1", first.replace(hour=10), days),
                     _daily("t-2", first.replace(hour=15), days)):  # fmt: skip
            await tx.save_task(task)
            await materialise(tx, task, now=now, horizon=NOW + HORIZON - now)
    return store


async def _claim(store: MemoryStore, occurrence_id: str) -> None:
    async with store.transaction() as tx:
        decision = await decide(
            tx, T, occurrence_id, "m-anna", Ask.CLAIM, channel="caldav", now=NOW
        )
        assert decision is not None and decision.add_claim is not None


def _recorded(desired: dict[str, DesiredItem]) -> dict[str, SyncRecord]:
    """The records a run that wrote `desired` keeps."""
    return {
        uid: SyncRecord(
            uid,
            f"/c/{uid}.ics",
            "e1",
            item.fingerprint,
            item.material,
            item.partstat,
            inputs=item.inputs,
            marks=item.marks,
        )
        for uid, item in desired.items()
    }


def _keys(desired: dict[str, DesiredItem]) -> dict[str, tuple[str, int | None]]:
    return {uid: (item.inputs, item.marks) for uid, item in desired.items()}


async def _synced(
    tmp_path: Path,
) -> tuple[Settings, MemoryStore, view_sync._Gathered, dict[str, SyncRecord], ViewAdvice]:
    """Anna's view read, and the records and advice of a run that wrote it."""
    settings = make_settings(tmp_path)
    store = await _store()
    gathered = await view_sync._gather(store, VIEW)
    assert gathered is not None
    records = _recorded(view_sync._desired(gathered, settings, VIEW, now=NOW))
    was = view_sync._recorded_advice(records, f"@{T}")
    assert was is not None and len(was.suggested) > 10
    return settings, store, gathered, records, was


async def _claimed(
    tmp_path: Path,
) -> tuple[Settings, view_sync._Gathered, dict[str, SyncRecord], ViewAdvice, str]:
    """`_synced`, then Anna's claim of Thursday 4 March: her view read again with the
    records of the run before (as the run of her answer patches it), and what she claimed."""
    settings, store, before, records, was = await _synced(tmp_path)
    claimed = before.occurrences["t-1"][2].occurrence.id
    await _claim(store, claimed)
    after = await view_sync._gather(store, VIEW)
    assert after is not None
    return settings, replace(after, records=records), records, was, claimed


async def test_a_claim_keys_again_only_the_copies_it_changed(tmp_path: Path) -> None:
    settings, after, records, was, claimed = await _claimed(tmp_path)
    changed = frozenset({claimed})
    patched = view_sync._desired(
        after,
        settings,
        VIEW,
        now=NOW,
        reuse=records,
        recorded=view_sync._as_recorded(records),
        changed=changed,
    )
    whole = view_sync._desired(after, settings, VIEW, now=NOW, reuse=records)

    assert _keys(patched) == _keys(whole)
    # The claim moved the advice: she holds all the circle's hours now, so the offers are
    # Bo's to be suggested, no longer hers.
    rekeyed = {uid for uid in whole if whole[uid].inputs != records[uid].inputs}
    assert rekeyed == {event_uid(claimed, T)} | {event_uid(o, T) for o in was.suggested}
    # Only those were rendered; every other copy stands as recorded (no body).
    assert {uid for uid, item in patched.items() if item.body} == rekeyed
    assert len(patched) == 80 and len(rekeyed) < 60


async def test_a_claims_own_copy_is_written_before_the_whole_advice_is_known(
    tmp_path: Path,
) -> None:
    """The run writes the gesture's copies first, with marks from their own offers alone
    (`_advice_for`), and works out the whole window's advice while those writes are in
    flight: the copies it moves come after. Together: exactly the copies, keys and marks of
    rendering the whole view."""
    settings, after, records, was, occurrence_id = await _claimed(tmp_path)
    changed = frozenset({occurrence_id})
    first = view_sync._advice_for(after, settings, VIEW, NOW, changed, ())
    assert first is not None
    phase1 = view_sync._desired(
        after,
        settings,
        VIEW,
        now=NOW,
        reuse=records,
        recorded=view_sync._as_recorded(records),
        changed=changed,
        advice_now=first,
    )
    claimed = event_uid(occurrence_id, T)
    assert {uid for uid, item in phase1.items() if item.body} == {claimed}
    whole = view_sync._desired(after, settings, VIEW, now=NOW, reuse=records)
    assert _keys(phase1)[claimed] == _keys(whole)[claimed]

    final = view_sync._desired(
        after, settings, VIEW, now=NOW, reuse=records, recorded=phase1, advice_was=first
    )
    assert _keys(final) == _keys(whole)
    # The claim moved her suggestions to Bo: those copies come after, and only they.
    moved = {uid for uid in final if final[uid] is not phase1[uid]}
    assert moved == {event_uid(o, T) for o in was.suggested} - {claimed}
    assert len(moved) > 10 and all(final[uid].body for uid in moved)


async def test_a_copy_fetched_to_be_written_back_is_rendered_without_working_out_the_advice(
    tmp_path: Path,
) -> None:
    """Nothing changed (the member only added an alarm): the advice is the records'."""
    settings, _, gathered, records, _ = await _synced(tmp_path)
    gathered = replace(gathered, records=records, care=None)  # advice worked out: none
    uid = sorted(records)[3]
    patched = view_sync._desired(
        gathered,
        settings,
        VIEW,
        now=NOW,
        reuse=records,
        force={uid},
        recorded=view_sync._as_recorded(records),
    )
    assert _keys(patched) == _keys(view_sync._as_recorded(records))
    assert {u for u, item in patched.items() if item.body} == {uid}


async def test_records_without_marks_render_the_whole_view(tmp_path: Path) -> None:
    """Records kept before marks were (NULL): the advice they show is not known."""
    settings, _, gathered, marked, _ = await _synced(tmp_path)
    records = {uid: replace(r, marks=None) for uid, r in marked.items()}
    gathered = replace(gathered, records=records)
    patched = view_sync._desired(
        gathered,
        settings,
        VIEW,
        now=NOW,
        reuse=records,
        recorded=view_sync._as_recorded(records),
        changed=frozenset({next(iter(gathered.occurrences["t-1"])).occurrence.id}),
    )
    assert all(item.marks is not None for item in patched.values())
    assert _keys(patched) == _keys(view_sync._desired(gathered, settings, VIEW, now=NOW))


async def test_a_run_reads_only_the_history_its_copies_and_advice_depend_on(
    tmp_path: Path,
) -> None:
    """The store keeps every past occurrence; a run reads those that ended in the last
    `view_sync.HISTORY` and renders the same copies, marks included, as from all of them."""
    settings = make_settings(tmp_path)
    first = NOW - timedelta(weeks=12)
    store = await _store(datetime(2026, 12, 7), 120, now=first)
    async with store.transaction() as tx:
        # Held in the far past (older than any window), in the windows and the four weeks
        # that `share` looks back on (Anna's: enough for Bo to be suggested), and ahead.
        held = [("m-anna", -60), ("m-bo", -50), ("m-bo", -2), ("m-anna", 3), ("m-bo", 9)]
        held += [("m-anna", days) for days in range(-26, -11, 2)]
        for member_id, days in held:
            day = (NOW + timedelta(days=days)).date()
            occurrence_id = f"t-1_{day:%Y%m%d}T1000"
            assert await tx.get_occurrence(T, occurrence_id) is not None, occurrence_id
            await tx.add_claim(T, Claim(occurrence_id, member_id, "caldav", first))
    whole = await view_sync._gather(store, VIEW)
    recent = await view_sync._gather(store, VIEW, since=NOW - view_sync.HISTORY)
    assert whole is not None and recent is not None
    count = sum(len(r) for r in recent.occurrences.values())
    assert count < sum(len(r) for r in whole.occurrences.values()) - 90
    ours = view_sync._desired(recent, settings, VIEW, now=NOW)
    assert _keys(ours) == _keys(view_sync._desired(whole, settings, VIEW, now=NOW))
    # What she held two to four weeks ago counts: a run reading less would mark her copies
    # differently.
    short = await view_sync._gather(store, VIEW, since=NOW - timedelta(days=10))
    assert short is not None
    assert _keys(view_sync._desired(short, settings, VIEW, now=NOW)) != _keys(ours)

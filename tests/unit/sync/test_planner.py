"""The planner against a simulated collection: `Server` is href -> (etag, body) with
conditional writes and a normalising store, `sync` runs one whole cycle the way the view-sync
service does (plan, apply, fetch, read, plan after fetch, apply)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from icalendar import Alarm, Calendar

from plugin.sync.fingerprint import fingerprint
from plugin.sync.gestures import Gesture, MemberCopy, read_member_copy
from plugin.sync.planner import (
    Create,
    Delete,
    DesiredItem,
    Fetch,
    Fetched,
    Forget,
    Intent,
    MemberDeleted,
    MemberGesture,
    Plan,
    Readings,
    Remember,
    RemoteItem,
    StorageEmpty,
    SyncRecord,
    Update,
    desired_item,
    plan_after_fetch,
    plan_view_sync,
    read_member_copies,
)
from plugin.sync.render import attendee_address
from tests.unit.sync.support import ANNA, DOMAIN, record, render, set_partstat, vevent

ADDRESS = attendee_address(ANNA, DOMAIN)
LIMIT = 64 * 1024
UIDS = tuple(f"o{i}" for i in range(5))
VARIANTS = ("open", "mine", "taken", "later", "cancelled", "passed")


@cache
def item(uid: str, variant: str = "open") -> DesiredItem:
    kwargs: dict[str, object] = {"oid": uid}
    if variant == "mine":
        kwargs["holders"] = ("m-anna",)
    elif variant == "taken":
        kwargs["holders"] = ("m-cy",)
    elif variant == "later":
        kwargs["start"] = datetime(2027, 3, 30, 15)
    elif variant == "cancelled":
        kwargs["cancelled"] = True
    elif variant == "passed":
        kwargs["passers"] = ("m-anna",)
    return desired_item(render(ANNA, record(**kwargs)))  # type: ignore[arg-type]


def full_uid(uid: str) -> str:
    return f"{uid}@{DOMAIN}"


def desired_of(variants: Mapping[str, str]) -> dict[str, DesiredItem]:
    items = (item(uid, variant) for uid, variant in variants.items())
    return {i.uid: i for i in items}


@dataclass
class Server:
    """A CalDAV collection: conditional writes; stores a normalised copy, as Radicale does."""

    items: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    counter: int = 0

    def _etag(self) -> str:
        self.counter += 1
        return f'"{self.counter}"'

    def put(self, href: str, body: bytes, if_match: str | None) -> str:
        current = self.items.get(href)
        if if_match is None:
            assert current is None, f"If-None-Match: * failed for {href}"
        else:
            assert current is not None and current[0] == if_match, f"If-Match failed for {href}"
        calendar = Calendar.from_ical(body)
        vevent(calendar).pop("DTSTAMP")
        vevent(calendar).add("dtstamp", datetime(2027, 3, 5, 12, 0, self.counter, tzinfo=UTC))
        calendar.pop("PRODID")
        calendar.add("prodid", "-//Radicale//NONSGML Radicale Server//EN")
        etag = self._etag()
        self.items[href] = (etag, calendar.to_ical())
        return etag

    def delete(self, href: str, if_match: str) -> None:
        assert self.items[href][0] == if_match, f"If-Match failed for {href}"
        del self.items[href]

    def listing(self) -> dict[str, RemoteItem]:
        return {href: RemoteItem(href, etag) for href, (etag, _) in self.items.items()}

    def member_writes(self, href: str, body: bytes) -> None:
        self.items[href] = (self._etag(), body)


def apply(plan: Plan, server: Server, records: dict[str, SyncRecord]) -> None:
    """The applier of the view-sync service, reduced to the fake server and a dict store."""
    for action in plan.actions:
        if isinstance(action, Create):
            href = f"{action.uid}.ics"
            etag = server.put(href, action.body, None)
            records[action.uid] = replace(action.record, href=href, etag=etag)
        elif isinstance(action, Update):
            etag = server.put(action.href, action.body, action.if_match)
            records[action.uid] = replace(action.record, etag=etag)
        elif isinstance(action, Delete):
            server.delete(action.href, action.if_match)
            del records[action.uid]
        elif isinstance(action, Forget):
            del records[action.uid]
        elif isinstance(action, Remember):
            records[action.record.uid] = action.record


@dataclass
class Cycle:
    first: Plan
    readings: Readings
    second: Plan

    @property
    def intents(self) -> tuple[Intent, ...]:
        return self.first.intents + self.readings.intents


def sync(
    desired: Mapping[str, DesiredItem], server: Server, records: dict[str, SyncRecord]
) -> Cycle:
    first = plan_view_sync(desired, server.listing(), records)
    apply(first, server, records)
    fetched = [
        Fetched(href, *server.items[href]) for href in first.fetch.hrefs if href in server.items
    ]
    readings = read_member_copies(fetched, records, member_address=ADDRESS, max_bytes=LIMIT)
    # (the service applies the intents to the domain here and renders `desired` again)
    second = plan_after_fetch(desired, readings)
    apply(second, server, records)
    return Cycle(first, readings, second)


def copy_at(server: Server, uid: str) -> Calendar:
    return Calendar.from_ical(server.items[f"{full_uid(uid)}.ics"][1])


def synced(variants: Mapping[str, str]) -> tuple[Server, dict[str, SyncRecord]]:
    server, records = Server(), dict[str, SyncRecord]()
    sync(desired_of(variants), server, records)
    return server, records


# --- examples -------------------------------------------------------------------------------


def test_the_module_docstring_example() -> None:
    a, b, c = item("a"), item("b"), item("c")
    records = {
        a.uid: SyncRecord(a.uid, "a.ics", '"1"', a.fingerprint, a.material, "NEEDS-ACTION"),
        b.uid: SyncRecord(b.uid, "b.ics", '"1"', b.fingerprint, b.material),
    }
    remote = {"a.ics": RemoteItem("a.ics", '"2"'), "x.ics": RemoteItem("x.ics", '"7"')}
    plan = plan_view_sync({i.uid: i for i in (a, b, c)}, remote, records)
    tombstone = SyncRecord(b.uid, None, None, b.fingerprint, b.material)
    assert plan.actions == (
        Remember(tombstone),
        Create(
            c.uid,
            c.body,
            SyncRecord(c.uid, None, None, c.fingerprint, c.material, sequence=c.sequence),
        ),
    )
    assert plan.fetch == Fetch(("a.ics",))
    assert plan.intents == (MemberDeleted(b.uid),)

    theirs = set_partstat(Calendar.from_ical(a.body), "ACCEPTED")
    alarm = Alarm()
    alarm.add("action", "DISPLAY")
    alarm.add("trigger", timedelta(minutes=-15))
    vevent(theirs).add_component(alarm)
    fetched = [Fetched("a.ics", '"2"', theirs.to_ical())]
    readings = read_member_copies(fetched, records, member_address=ADDRESS, max_bytes=LIMIT)
    assert readings.intents == (MemberGesture(a.uid, Gesture.CLAIM),)

    mine = item("a", "mine")
    (update,) = plan_after_fetch({mine.uid: mine}, readings).actions
    assert isinstance(update, Update)
    assert (update.href, update.if_match) == ("a.ics", '"2"')
    written = Calendar.from_ical(update.body)
    assert fingerprint(written) == mine.fingerprint and len(written.walk("VALARM")) == 1
    assert update.record == SyncRecord(
        mine.uid, "a.ics", None, mine.fingerprint, mine.material, "ACCEPTED", True,
        sequence=mine.sequence + 1,  # a change carecal makes, past the copy's own
    )  # fmt: skip


def test_first_sync_creates_then_nothing_to_do() -> None:
    server, records = Server(), dict[str, SyncRecord]()
    cycle = sync(desired_of({"o0": "open", "o1": "mine"}), server, records)
    assert [type(a) for a in cycle.first.actions] == [Create, Create]
    assert set(records) == {full_uid("o0"), full_uid("o1")}
    again = plan_view_sync(desired_of({"o0": "open", "o1": "mine"}), server.listing(), records)
    assert again.empty


def test_server_normalisation_is_remembered_not_rewritten() -> None:
    server, records = synced({"o0": "open"})
    href = f"{full_uid('o0')}.ics"
    calendar = Calendar.from_ical(server.items[href][1])
    vevent(calendar).add("last-modified", datetime(2031, 1, 1))
    server.member_writes(href, calendar.to_ical())  # e.g. a server-side rewrite: new etag
    cycle = sync(desired_of({"o0": "open"}), server, records)
    assert cycle.first.fetch == Fetch((href,))
    assert cycle.intents == ()
    assert [type(a) for a in cycle.second.actions] == [Remember]
    assert records[full_uid("o0")].etag == server.items[href][0]


def test_desired_change_is_an_update_with_if_match() -> None:
    server, records = synced({"o0": "open"})
    record_before = records[full_uid("o0")]
    plan = plan_view_sync(desired_of({"o0": "taken"}), server.listing(), records)
    (update,) = plan.actions
    assert isinstance(update, Update)
    assert (update.href, update.if_match) == (record_before.href, record_before.etag)
    assert update.record.fingerprint == item("o0", "taken").fingerprint


def test_a_claim_by_partstat_then_the_update_after_it_was_applied() -> None:
    server, records = synced({"o0": "open"})
    server.member_writes(
        f"{full_uid('o0')}.ics", set_partstat(copy_at(server, "o0"), "ACCEPTED").to_ical()
    )
    first = plan_view_sync(desired_of({"o0": "open"}), server.listing(), records)
    fetched = [Fetched(h, *server.items[h]) for h in first.fetch.hrefs]
    readings = read_member_copies(fetched, records, member_address=ADDRESS, max_bytes=LIMIT)
    assert readings.intents == (MemberGesture(full_uid("o0"), Gesture.CLAIM),)
    # the claim won: desired now says [Dig]/ACCEPTED; the write shows it at once
    won = plan_after_fetch(desired_of({"o0": "mine"}), readings)
    (update,) = won.actions
    assert isinstance(update, Update)
    assert b"[Dig]" in update.body and update.record.partstat == "ACCEPTED"
    # the claim lost a race: desired says [Cy]; the member's ACCEPTED is reset
    lost = plan_after_fetch(desired_of({"o0": "taken"}), readings)
    (update,) = lost.actions
    assert isinstance(update, Update)
    assert b"[Cy]" in update.body and b"PARTSTAT=NEEDS-ACTION" in update.body


def test_a_release_and_a_pass_by_partstat() -> None:
    server, records = synced({"o0": "mine", "o1": "mine"})
    for uid, partstat in (("o0", "TENTATIVE"), ("o1", "DECLINED")):
        body = set_partstat(copy_at(server, uid), partstat).to_ical()
        server.member_writes(f"{full_uid(uid)}.ics", body)
    cycle = sync(desired_of({"o0": "open", "o1": "passed"}), server, records)
    assert cycle.intents == (
        MemberGesture(full_uid("o0"), Gesture.RELEASE),
        MemberGesture(full_uid("o1"), Gesture.PASS),
    )


def test_an_object_carecal_found_where_it_meant_to_create_is_overwritten_not_read() -> None:
    """A create that met an object already there (a run that stopped before storing its
    record; a collection left from an account the member had before) records no fingerprint.
    Whatever PARTSTAT that object holds answers no copy carecal wrote: it is not a claim or a
    pass, and the copy is overwritten with ours."""
    href = f"{full_uid('o0')}.ics"
    server = Server()
    stale = set_partstat(Calendar.from_ical(item("o0").body), "ACCEPTED").to_ical()
    server.member_writes(href, stale)  # left there, answered long ago
    unrecorded = SyncRecord(full_uid("o0"), href, "", "", "", "NEEDS-ACTION")
    records = {unrecorded.uid: unrecorded}
    cycle = sync(desired_of({"o0": "open"}), server, records)
    assert cycle.first.fetch.hrefs == (href,)
    assert cycle.intents == ()
    (update,) = cycle.second.actions
    assert isinstance(update, Update) and b"PARTSTAT=NEEDS-ACTION" in update.body
    assert sync(desired_of({"o0": "open"}), server, records).intents == ()
    # With its record known, the same answer is a claim.
    server.member_writes(href, set_partstat(copy_at(server, "o0"), "ACCEPTED").to_ical())
    claimed = sync(desired_of({"o0": "open"}), server, records)
    assert claimed.intents == (MemberGesture(full_uid("o0"), Gesture.CLAIM),)


def test_member_deleted_is_a_pass_and_not_recreated_until_the_task_changes() -> None:
    server, records = synced({"o0": "mine", "o1": "open"})
    del server.items[f"{full_uid('o0')}.ics"]
    cycle = sync(desired_of({"o0": "mine", "o1": "open"}), server, records)
    assert cycle.intents == (MemberDeleted(full_uid("o0")),)
    assert not any(isinstance(a, Create) for a in cycle.first.actions)
    assert records[full_uid("o0")].href is None  # a tombstone
    # after the pass was applied (and while others claim and release) it stays away
    for variant in ("passed", "taken", "cancelled", "open"):
        assert plan_view_sync(
            desired_of({"o0": variant, "o1": "open"}), server.listing(), records
        ).empty
    # a new time is a material change: the member sees it again
    cycle = sync(desired_of({"o0": "later", "o1": "open"}), server, records)
    assert [type(a) for a in cycle.first.actions] == [Create]
    assert cycle.intents == ()
    assert fingerprint(copy_at(server, "o0")) == item("o0", "later").fingerprint
    # a tombstone whose occurrence left the view is forgotten
    del server.items[f"{full_uid('o0')}.ics"]
    sync(desired_of({"o0": "later", "o1": "open"}), server, records)
    plan = plan_view_sync(desired_of({"o1": "open"}), server.listing(), records)
    assert plan.actions == (Forget(full_uid("o0")),)


def test_deleted_and_changed_at_once_is_a_pass_and_a_recreate() -> None:
    server, records = synced({"o0": "open", "o1": "open"})
    del server.items[f"{full_uid('o0')}.ics"]
    plan = plan_view_sync(desired_of({"o0": "later", "o1": "open"}), server.listing(), records)
    assert plan.intents == (MemberDeleted(full_uid("o0")),)
    assert [type(a) for a in plan.actions] == [Create]


def test_items_that_are_not_ours_are_left_alone() -> None:
    server, records = synced({"o0": "open"})
    server.member_writes("birthday.ics", b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
    cycle = sync(desired_of({"o0": "taken"}), server, records)
    touched = {getattr(a, "href", None) for a in cycle.first.actions + cycle.second.actions}
    assert "birthday.ics" not in touched and "birthday.ics" not in cycle.first.fetch.hrefs
    assert "birthday.ics" in server.items


def test_an_item_leaving_the_view_is_deleted_with_if_match() -> None:
    server, records = synced({"o0": "open", "o1": "open"})
    plan = plan_view_sync(desired_of({"o1": "open"}), server.listing(), records)
    href = f"{full_uid('o0')}.ics"
    assert plan.actions == (Delete(full_uid("o0"), href, server.items[href][0]),)


def test_bad_member_data_is_overwritten_with_ours() -> None:
    server, records = synced({"o0": "open"})
    server.member_writes(f"{full_uid('o0')}.ics", b"BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nEND:VTODO")
    cycle = sync(desired_of({"o0": "open"}), server, records)
    assert cycle.intents == ()
    (update,) = cycle.second.actions
    ours = item("o0", "open")
    assert isinstance(update, Update) and update.body == ours.body.replace(
        b"SEQUENCE:%d" % ours.sequence, b"SEQUENCE:%d" % (ours.sequence + 1)
    )


def test_an_event_of_the_members_own_at_a_copys_href_is_theirs_and_the_copy_deleted() -> None:
    """Another UID where the copy was: the member deleted it and made their own (servers
    refuse a UID change, so overwriting it would fail every run). A pass; theirs is left."""
    server, records = synced({"o0": "open", "o1": "open"})
    href = f"{full_uid('o0')}.ics"
    theirs = b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:mine@x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    server.member_writes(href, theirs)
    cycle = sync(desired_of({"o0": "open", "o1": "open"}), server, records)
    assert cycle.intents == (MemberDeleted(full_uid("o0")),)
    assert [type(a) for a in cycle.second.actions] == [Remember]
    assert server.items[href][1] == theirs
    assert records[full_uid("o0")].href is None  # a tombstone: never written over theirs
    # Once the occurrence leaves the view, its record goes; their event stays.
    cycle = sync(desired_of({"o1": "open"}), server, records)
    assert full_uid("o0") not in records and server.items[href][1] == theirs


def test_member_alarms_survive_a_later_update() -> None:
    server, records = synced({"o0": "open"})
    calendar = copy_at(server, "o0")
    alarm = Alarm()
    alarm.add("action", "DISPLAY")
    alarm.add("trigger", timedelta(minutes=-45))
    vevent(calendar).add_component(alarm)
    server.member_writes(f"{full_uid('o0')}.ics", calendar.to_ical())
    cycle = sync(desired_of({"o0": "open"}), server, records)
    assert [type(a) for a in cycle.second.actions] == [Remember]
    assert records[full_uid("o0")].member_alarms
    # the time changes: the planner fetches first, so the update keeps the alarm
    cycle = sync(desired_of({"o0": "later"}), server, records)
    assert cycle.first.actions == () and cycle.first.fetch.hrefs
    copy = copy_at(server, "o0")
    assert [a.decoded("TRIGGER") for a in copy.walk("VALARM")] == [timedelta(minutes=-45)]
    assert fingerprint(copy) == item("o0", "later").fingerprint


def add_alarm(server: Server, uid: str, minutes: int) -> None:
    """The member's app adds an alarm to their copy of `uid`."""
    calendar = copy_at(server, uid)
    alarm = Alarm()
    alarm.add("action", "DISPLAY")
    alarm.add("trigger", timedelta(minutes=-minutes))
    vevent(calendar).add_component(alarm)
    server.member_writes(f"{full_uid(uid)}.ics", calendar.to_ical())


def triggers(server: Server, uid: str) -> list[timedelta]:
    return [a.decoded("TRIGGER") for a in copy_at(server, uid).walk("VALARM")]


@pytest.mark.parametrize("synced_first", [True, False])
def test_member_alarms_follow_an_occurrence_the_host_moved(synced_first: bool) -> None:
    # A one-off task moved by the host: its one occurrence gets a new id, so a new UID.
    server, records = synced({"o0": "open"})
    add_alarm(server, "o0", 45)
    if synced_first:  # the alarm was read before the move (else the move comes first)
        sync(desired_of({"o0": "open"}), server, records)
        assert records[full_uid("o0")].member_alarms
    moved = desired_of({"o1": "later"})
    cycle = sync(moved, server, records)
    # the old copy is read before anything is written, the new one created after
    assert cycle.first.actions == ()
    assert cycle.first.fetch == Fetch((f"{full_uid('o0')}.ics",))
    assert [type(a) for a in cycle.second.actions] == [Create, Delete]
    assert set(server.items) == {f"{full_uid('o1')}.ics"}
    assert triggers(server, "o1") == [timedelta(minutes=-45)]
    assert fingerprint(copy_at(server, "o1")) == item("o1", "later").fingerprint
    assert records[full_uid("o1")].member_alarms
    assert plan_view_sync(moved, server.listing(), records).empty


def test_an_occurrence_leaving_the_window_keeps_its_alarms_to_itself() -> None:
    # A series: o0 passes out of the window as o2 enters it; o1 is still there.
    server, records = synced({"o0": "open", "o1": "open"})
    add_alarm(server, "o0", 45)
    sync(desired_of({"o0": "open", "o1": "open"}), server, records)
    cycle = sync(desired_of({"o1": "open", "o2": "open"}), server, records)
    assert [type(a) for a in cycle.first.actions] == [Delete, Create]
    assert cycle.first.fetch == Fetch()
    assert triggers(server, "o2") == []


def test_a_moved_occurrence_without_alarms_is_deleted_and_created_at_once() -> None:
    server, records = synced({"o0": "open"})
    cycle = sync(desired_of({"o1": "later"}), server, records)
    assert [type(a) for a in cycle.first.actions] == [Delete, Create]
    assert cycle.first.fetch == Fetch()


def test_bad_member_data_is_logged_with_its_reason_not_its_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, records = synced({"o0": "open"})
    href = f"{full_uid('o0')}.ics"
    server.member_writes(href, b"BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nEND:VTODO\r\nEND:VCALENDAR")
    with caplog.at_level(logging.WARNING, logger="plugin.sync.planner"):
        sync(desired_of({"o0": "open"}), server, records)
    (logged,) = caplog.records
    assert logged.getMessage() == "member copy ignored"
    assert (getattr(logged, "uid", None), getattr(logged, "href", None)) == (full_uid("o0"), href)
    assert getattr(logged, "reason", None) == "not_an_event"


def test_an_empty_collection_raises_instead_of_passing_everything() -> None:
    server, records = synced({"o0": "open", "o1": "mine"})
    server.items.clear()
    with pytest.raises(StorageEmpty) as raised:
        plan_view_sync(desired_of({"o0": "open", "o1": "mine"}), server.listing(), records)
    assert raised.value.records == 2


def test_one_deleted_copy_is_a_pass_even_when_it_was_the_only_one() -> None:
    server, records = synced({"o0": "open"})
    server.items.clear()
    plan = plan_view_sync(desired_of({"o0": "open"}), server.listing(), records)
    assert plan.intents == (MemberDeleted(full_uid("o0")),)


def test_a_collection_holding_only_foreign_objects_counts_as_empty() -> None:
    server, records = synced({"o0": "open", "o1": "mine"})
    server.items.clear()
    server.member_writes("foreign.ics", b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
    with pytest.raises(StorageEmpty):
        plan_view_sync(desired_of({"o0": "open", "o1": "mine"}), server.listing(), records)


def test_an_empty_collection_is_fine_when_nothing_recorded_is_wanted() -> None:
    server, records = synced({"o0": "open"})
    server.items.clear()
    plan = plan_view_sync({}, server.listing(), records)
    assert plan.actions == (Forget(full_uid("o0")),) and plan.intents == ()


# --- properties -----------------------------------------------------------------------------

MEMBER_EDITS = ("none", "delete", "accept", "decline", "alarm", "retitle", "normalise", "garbage")

views = st.dictionaries(st.sampled_from(UIDS), st.sampled_from(VARIANTS), max_size=len(UIDS))
rounds = st.lists(
    st.tuples(st.dictionaries(st.sampled_from(UIDS), st.sampled_from(MEMBER_EDITS)), views),
    min_size=1,
    max_size=3,
)


def member_edit(server: Server, uid: str, edit: str) -> bool:
    """The member (or their server) does `edit` to their copy; True if it deleted it."""
    href = f"{full_uid(uid)}.ics"
    if href not in server.items or edit == "none":
        return False
    calendar = Calendar.from_ical(server.items[href][1])
    if edit == "delete":
        del server.items[href]
        return True
    if edit in ("accept", "decline"):
        calendar = set_partstat(calendar, "ACCEPTED" if edit == "accept" else "DECLINED")
    elif edit == "alarm":
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("trigger", timedelta(minutes=-10))
        vevent(calendar).add_component(alarm)
    elif edit == "retitle":
        vevent(calendar).pop("SUMMARY")
        vevent(calendar).add("summary", "mine now")
    elif edit == "normalise":
        vevent(calendar).add("last-modified", datetime(2031, 1, 1))
    elif edit == "garbage":
        server.member_writes(href, b"\x00 not a calendar")
        return False
    server.member_writes(href, calendar.to_ical())
    return False


def agrees(
    server: Server, records: Mapping[str, SyncRecord], desired: Mapping[str, DesiredItem]
) -> None:
    """Every desired item is on the server as rendered, or tombstoned by a member delete."""
    ours = {r.href for r in records.values() if r.href is not None}
    for uid, wanted in desired.items():
        rec = records[uid]
        if rec.href is None:
            continue
        copy = read_member_copy(
            server.items[rec.href][1], member_address=ADDRESS, max_bytes=LIMIT, expected_uid=uid
        )
        assert isinstance(copy, MemberCopy)
        assert (copy.fingerprint, copy.partstat) == (wanted.fingerprint, wanted.partstat)
        assert server.items[rec.href][0] == rec.etag
    assert set(records) <= set(desired)
    assert ours <= set(server.items)


@settings(max_examples=60, deadline=None)
@given(start=views, rounds=rounds, foreign=st.booleans())
def test_applying_a_plan_converges_and_replanning_yields_nothing(
    start: dict[str, str], rounds: list[tuple[dict[str, str], dict[str, str]]], foreign: bool
) -> None:
    server, records = synced(start)
    if foreign:
        server.member_writes("foreign.ics", b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
    for edits, variants in rounds:
        deleted = {full_uid(u) for u, e in edits.items() if member_edit(server, u, e)}
        desired = desired_of(variants)
        before = dict(records)
        try:
            cycle = sync(desired, server, records)
        except StorageEmpty:
            listed = server.listing()
            assert not any(r.href in listed for r in records.values())
            assert sum(1 for u in records if u in desired and records[u].href) >= 2
            return
        actions = cycle.first.actions + cycle.second.actions
        for kind in {type(a).__name__ for a in actions} | {type(i).__name__ for i in cycle.intents}:
            event(kind)
        deletions = [a for a in actions if isinstance(a, Delete)]
        assert len(deletions) <= len(before)
        assert {d.href for d in deletions} <= {r.href for r in before.values()}
        reported = {i.uid for i in cycle.intents if isinstance(i, MemberDeleted)}
        assert reported == {u for u in deleted if u in desired and before[u].href is not None}
        agrees(server, records, desired)
        assert plan_view_sync(desired, server.listing(), records).empty
        if foreign:
            assert "foreign.ics" in server.items


@settings(max_examples=100, deadline=None)
@given(
    uids=st.sets(st.sampled_from(UIDS), min_size=2),
    extra=st.dictionaries(st.sampled_from(UIDS), st.sampled_from(VARIANTS)),
)
def test_storage_empty_for_an_unexpectedly_empty_collection(
    uids: set[str], extra: dict[str, str]
) -> None:
    records = {
        full_uid(u): SyncRecord(
            full_uid(u), f"{u}.ics", '"1"', item(u).fingerprint, item(u).material
        )
        for u in uids
    }
    desired = desired_of({**extra, **{u: "open" for u in uids}})
    with pytest.raises(StorageEmpty):
        plan_view_sync(desired, {}, records)


@settings(max_examples=100, deadline=None)
@given(
    recorded=st.dictionaries(
        st.sampled_from(UIDS), st.sampled_from(("live", "tombstone", "moved"))
    ),
    listed=st.sets(st.sampled_from(UIDS)),
    variants=views,
)
def test_never_more_deletions_than_records(
    recorded: dict[str, str], listed: set[str], variants: dict[str, str]
) -> None:
    records = {
        full_uid(u): SyncRecord(
            full_uid(u),
            None if state == "tombstone" else f"{u}.ics",
            None if state == "tombstone" else '"1"',
            item(u).fingerprint,
            item(u).material,
        )
        for u, state in recorded.items()
    }
    remote = {
        f"{u}.ics": RemoteItem(f"{u}.ics", '"2"' if recorded.get(u) == "moved" else '"1"')
        for u in listed
    }
    remote["foreign.ics"] = RemoteItem("foreign.ics", '"9"')
    try:
        plan = plan_view_sync(desired_of(variants), remote, records)
    except StorageEmpty:
        assert not any(u in listed for u, state in recorded.items() if state != "tombstone")
        return
    deletions = [a for a in plan.actions if isinstance(a, Delete | Forget)]
    assert len(deletions) <= len(records)
    assert len({d.uid for d in deletions}) == len(deletions)
    assert all(a.href != "foreign.ics" for a in plan.actions if isinstance(a, Update | Delete))
    assert "foreign.ics" not in plan.fetch.hrefs


def test_every_write_of_a_copy_goes_past_its_sequence() -> None:
    """DESIGN: SEQUENCE is bumped on every change carecal makes. The rendering carries the
    task's version; a copy written again (its holders changed, the task did not) goes one
    past what carecal last wrote, or past what the member's app made of it."""
    server, records = synced({"o0": "open"})
    first = records[full_uid("o0")].sequence
    assert first == item("o0", "open").sequence and b"SEQUENCE:%d" % first in copy_at_bytes(
        server, "o0"
    )
    sync(desired_of({"o0": "taken"}), server, records)  # [Ledig] -> [Anna]: one change
    assert records[full_uid("o0")].sequence == first + 1
    assert copy_at(server, "o0").walk("VEVENT")[0]["SEQUENCE"] == first + 1
    sync(desired_of({"o0": "taken"}), server, records)  # nothing changed: nothing written
    assert records[full_uid("o0")].sequence == first + 1

    # Her app raised it (Apple Calendar does on an edit) and moved the event: put back,
    # past hers.
    calendar = copy_at(server, "o0")
    event = calendar.walk("VEVENT")[0]
    event["SEQUENCE"] = 7
    event["DTSTART"].dt = event["DTSTART"].dt + timedelta(hours=2)
    server.member_writes(f"{full_uid('o0')}.ics", bytes(calendar.to_ical()))
    sync(desired_of({"o0": "taken"}), server, records)
    assert copy_at(server, "o0").walk("VEVENT")[0]["SEQUENCE"] == 8
    assert records[full_uid("o0")].sequence == 8


def copy_at_bytes(server: Server, uid: str) -> bytes:
    return server.items[f"{full_uid(uid)}.ics"][1]


def test_a_copy_older_than_carecals_last_write_says_nothing() -> None:
    """Its SEQUENCE is below the one carecal last wrote: an app put back a cached copy.
    Without a SEQUENCE (an app that drops it), the copy is read as always; and so is the
    copy carecal last wrote, whatever its SEQUENCE (an older instance wrote it during a
    rolling upgrade, with the task's version)."""
    mine, offered = item("a", "mine"), item("a", "open")
    record = SyncRecord(
        offered.uid, "a.ics", '"1"', offered.fingerprint, offered.material, "NEEDS-ACTION",
        sequence=mine.sequence + 1,
    )  # fmt: skip
    current = set_partstat(Calendar.from_ical(offered.body), "ACCEPTED")
    readings = read_member_copies(
        [Fetched("a.ics", '"4"', current.to_ical())], {mine.uid: record},
        member_address=ADDRESS, max_bytes=LIMIT,
    )  # fmt: skip
    assert readings.intents == (MemberGesture(mine.uid, Gesture.CLAIM),)
    older = set_partstat(Calendar.from_ical(mine.body), "ACCEPTED")
    readings = read_member_copies(
        [Fetched("a.ics", '"2"', older.to_ical())], {mine.uid: record},
        member_address=ADDRESS, max_bytes=LIMIT,
    )  # fmt: skip
    assert readings.intents == ()
    del vevent(older)["SEQUENCE"]
    readings = read_member_copies(
        [Fetched("a.ics", '"3"', older.to_ical())], {mine.uid: record},
        member_address=ADDRESS, max_bytes=LIMIT,
    )  # fmt: skip
    assert readings.intents == (MemberGesture(mine.uid, Gesture.CLAIM),)


def test_a_sequence_her_app_raised_is_kept_when_her_copy_is_only_remembered() -> None:
    """Her app raised SEQUENCE to 7 and changed nothing carecal owns: the copy is kept as it
    is (no write), and carecal's next write goes past her 7, not past its own last."""
    server, records = synced({"o0": "open"})
    calendar = copy_at(server, "o0")
    vevent(calendar)["SEQUENCE"] = 7
    vevent(calendar).add("CATEGORIES", "Familie")  # not carecal's: no write
    server.member_writes(f"{full_uid('o0')}.ics", bytes(calendar.to_ical()))
    cycle = sync(desired_of({"o0": "open"}), server, records)
    assert [type(a) for a in cycle.second.actions] == [Remember]
    assert records[full_uid("o0")].sequence == 7
    sync(desired_of({"o0": "taken"}), server, records)
    assert copy_at(server, "o0").walk("VEVENT")[0]["SEQUENCE"] == 8


def test_a_sequence_past_what_the_store_holds_stops_at_its_limit() -> None:
    """An app may write any SEQUENCE; the record keeps a 32-bit one (PostgreSQL INTEGER)."""
    server, records = synced({"o0": "open"})
    calendar = copy_at(server, "o0")
    vevent(calendar)["SEQUENCE"] = 2**40
    vevent(calendar)["DTSTART"].dt += timedelta(hours=1)  # hers: carecal writes its own back
    server.member_writes(f"{full_uid('o0')}.ics", bytes(calendar.to_ical()))
    sync(desired_of({"o0": "open"}), server, records)
    assert records[full_uid("o0")].sequence == 2**31 - 1
    assert copy_at(server, "o0").walk("VEVENT")[0]["SEQUENCE"] == 2**31 - 1

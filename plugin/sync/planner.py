"""The pure planner of one view's sync: what to write, fetch and forget, as plain data.

Like vdirsyncer's `_get_actions` and cosmicpython's `determine_actions`, it decides and never
does I/O; the service applies the actions with the CalDAV port and the store. One view (one
member's collection for one circle) is synced in two pure steps around one fetch:

1. `plan_view_sync(desired, remote, records)` compares the desired copies (rendered from the
   database), the collection's ETag listing and the sync records of the last run. It writes
   what needs no look at the member's copy (Create, Update, Delete, Forget, Remember), asks to
   `Fetch` the items whose ETag moved since our write (a member edit, or just server
   normalisation), and reports `MemberDeleted` for copies the member deleted (a pass).
2. The service fetches those bodies (one `calendar-multiget`). `read_member_copies(fetched,
   records, ...)` yields the member's gestures (`MemberGesture`: claim, pass, release); the
   service applies them and every `MemberDeleted` to the domain (`decide_claim` ...), renders
   `desired` again, and `plan_after_fetch(desired, readings)` writes the fetched items back:
   carecal-owned fields from `desired`, the member's VALARMs kept (`merge_member_copy`), or
   just `Remember`s the new ETag when the copy already says what we would write.

Deciding writes only after the gestures are applied means a claim that wins shows `[Dig]` at
once, and one that loses a race is reset to `[Anna]`/NEEDS-ACTION in the same cycle.

Example. Records: `a` (href a.ics, etag "1", we wrote NEEDS-ACTION) and `b` (b.ics, "1").
Remote: a.ics with etag "2", b.ics gone, a foreign x.ics. Desired: `a`, `b` as before, new `c`.

    plan_view_sync -> Plan(actions=(Remember(<b, href None>), Create("c", ...)),
                           fetch=Fetch(("a.ics",)), intents=(MemberDeleted("b"),))
    # b is not re-created (its material content is unchanged) but kept as a tombstone;
    # x.ics is not ours and is never touched.
    multiget(a.ics) -> the member's copy: PARTSTAT=ACCEPTED, and a VALARM they added
    read_member_copies -> Readings(intents=(MemberGesture("a", CLAIM),), ...)
    # the service applies the claim on `a` and the pass on `b` in one transaction, and
    # renders `a` again: [Dig], ACCEPTED, OPAQUE
    plan_after_fetch -> Plan(actions=(Update("a", "a.ics", if_match="2", <ours + VALARM>),))

The intents must be applied (durably) before `plan_after_fetch`: the write puts the domain's
answer into the copy, and a gesture not applied by then is overwritten.

Sync records (`SyncRecord`) hold per UID what we last wrote: href, ETag, `fingerprint`,
`material`, the member's `partstat` (the gesture baseline) and whether the member's copy had
alarms (then an update fetches first, to keep them). A record with `href=None` is a tombstone:
the member deleted the copy and it is re-created only when its `material` changes.

Each write action carries the `record` to store once it succeeded (the applier fills in the
href it chose and the ETag the server answered). Writes are conditional: `If-None-Match: *`
for Create, `If-Match` for Update and Delete; a 412 just means "plan again next cycle". A
Create's href should derive from the UID, so a retry after a crash meets its own object.

Errors:

    StorageEmpty (RuntimeError)   the collection lists none of our copies though records
                                  say it held several we still want there: refuse to plan
                                  a pass for every one of them (vdirsyncer's StorageEmpty)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from icalendar import Calendar

from plugin.sync.fingerprint import fingerprint, material_fingerprint, prop_values
from plugin.sync.gestures import (
    BadMemberData,
    Gesture,
    MemberCopy,
    gesture_between,
    merge_member_copy,
    read_member_copy,
)

__all__ = [
    "Action",
    "Create",
    "Delete",
    "DesiredItem",
    "Fetch",
    "Fetched",
    "Forget",
    "Intent",
    "MemberDeleted",
    "MemberGesture",
    "Plan",
    "Readings",
    "Remember",
    "RemoteItem",
    "StorageEmpty",
    "SyncRecord",
    "Update",
    "desired_item",
    "plan_after_fetch",
    "plan_view_sync",
    "read_member_copies",
]


class StorageEmpty(RuntimeError):
    """The collection lists nothing though `records` say carecal wrote items into it."""

    def __init__(self, records: int) -> None:
        super().__init__(f"the collection is empty but {records} synced items were expected")
        self.records = records


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DesiredItem:
    """One copy as carecal wants it in the member's collection (see `desired_item`)."""

    uid: str
    body: bytes
    fingerprint: str
    material: str
    partstat: str
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class RemoteItem:
    href: str
    etag: str


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """What carecal last wrote for one UID in this view; `href=None` marks a tombstone."""

    uid: str
    href: str | None
    etag: str | None
    fingerprint: str
    material: str = ""
    partstat: str = "NEEDS-ACTION"
    member_alarms: bool = False


@dataclass(frozen=True, slots=True)
class Fetched:
    """A body fetched from the collection (`calendar-multiget`)."""

    href: str
    etag: str
    body: bytes


# --- actions and intents --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Create:
    """PUT with `If-None-Match: *`; then store `record` with the href and ETag."""

    uid: str
    body: bytes
    record: SyncRecord


@dataclass(frozen=True, slots=True)
class Update:
    """PUT to `href` with `If-Match: if_match`; then store `record` with the new ETag."""

    uid: str
    href: str
    if_match: str
    body: bytes
    record: SyncRecord


@dataclass(frozen=True, slots=True)
class Delete:
    """DELETE `href` with `If-Match: if_match`; then drop the record."""

    uid: str
    href: str
    if_match: str


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop the record; nothing to do on the server."""

    uid: str


@dataclass(frozen=True, slots=True)
class Remember:
    """Store `record` (a new ETag for an unchanged copy, or a tombstone); no server I/O."""

    record: SyncRecord


Action = Create | Update | Delete | Forget | Remember


@dataclass(frozen=True, slots=True)
class Fetch:
    hrefs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberDeleted:
    """The view's owner deleted their copy of `uid`: a pass."""

    uid: str


@dataclass(frozen=True, slots=True)
class MemberGesture:
    """The view's owner changed their PARTSTAT on `uid`: claim, pass or release."""

    uid: str
    gesture: Gesture


Intent = MemberDeleted | MemberGesture


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()
    fetch: Fetch = field(default_factory=Fetch)
    intents: tuple[Intent, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.actions or self.fetch.hrefs or self.intents)


@dataclass(frozen=True, slots=True)
class Readings:
    """The fetched copies, read: the member's intents and what each copy holds."""

    intents: tuple[Intent, ...]
    copies: tuple[tuple[SyncRecord, Fetched, MemberCopy | BadMemberData], ...]


# --- the planner ----------------------------------------------------------------------------


def desired_item(calendar: Calendar) -> DesiredItem:
    """A rendered copy (`render.render_event`) as the planner compares it."""
    event = calendar.walk("VEVENT")[0]
    attendees = prop_values(event, "ATTENDEE")
    partstat = "NEEDS-ACTION"
    if attendees:
        partstat = str(getattr(attendees[0], "params", {}).get("PARTSTAT", partstat)).upper()
    return DesiredItem(
        uid=str(event["UID"]),
        body=bytes(calendar.to_ical()),
        fingerprint=fingerprint(calendar),
        material=material_fingerprint(calendar),
        partstat=partstat,
        cancelled=str(event.get("STATUS", "")).upper() == "CANCELLED",
    )


def plan_view_sync(
    desired: Mapping[str, DesiredItem],
    remote: Mapping[str, RemoteItem],
    records: Mapping[str, SyncRecord],
) -> Plan:
    """Step 1: `desired` by UID, `remote` by href (the ETag listing), `records` by UID.

    Raises StorageEmpty when `remote` lists none of the copies the records say are there,
    while two or more of them are still desired (a wiped or misread collection must not turn
    into a pass for every item; one missing copy is an ordinary deletion: a pass). Objects
    that are not ours do not count: a collection reset to one foreign event is still "empty".
    When nothing recorded is desired any more, an empty collection is simply consistent and
    the records are forgotten.
    """
    live = [r for r in records.values() if r.href is not None]
    wanted = sum(1 for r in live if r.uid in desired)
    if wanted >= 2 and not any(r.href in remote for r in live):
        raise StorageEmpty(len(live))
    actions: list[Action] = []
    fetch: list[str] = []
    intents: list[Intent] = []
    for uid in sorted(records.keys() | desired.keys()):
        record, item = records.get(uid), desired.get(uid)
        if record is None:
            if item is not None:
                actions.append(_create(item))
        elif record.href is None:  # a tombstone: the member deleted their copy
            if item is None:
                actions.append(Forget(uid))
            elif item.material != record.material and not item.cancelled:
                actions.append(_create(item))
        elif (listed := remote.get(record.href)) is None:
            if item is None:
                actions.append(Forget(uid))
            else:
                intents.append(MemberDeleted(uid))
                tombstone = SyncRecord(uid, None, None, record.fingerprint, record.material)
                changed = item.material != record.material and not item.cancelled
                actions.append(_create(item) if changed else Remember(tombstone))
        elif item is None:
            actions.append(Delete(uid, record.href, listed.etag))
        elif listed.etag != record.etag:
            fetch.append(record.href)  # the member's copy moved: read it before writing
        elif item.fingerprint != record.fingerprint or item.partstat != record.partstat:
            if record.member_alarms:
                fetch.append(record.href)  # keep their alarms: merge with the copy
            else:
                actions.append(_update(item, record.href, listed.etag, item.body, False))
    return Plan(tuple(actions), Fetch(tuple(fetch)), tuple(intents))


def read_member_copies(
    fetched: Sequence[Fetched],
    records: Mapping[str, SyncRecord],
    *,
    member_address: str,
    max_bytes: int,
) -> Readings:
    """Step 2a: parse the fetched copies and read the owner's gestures from them.

    Bodies at hrefs no record knows are ignored (not ours).
    """
    by_href = {r.href: r for r in records.values() if r.href is not None}
    intents: list[Intent] = []
    copies: list[tuple[SyncRecord, Fetched, MemberCopy | BadMemberData]] = []
    for item in sorted(fetched, key=lambda f: f.href):
        record = by_href.get(item.href)
        if record is None:
            continue
        copy = read_member_copy(
            item.body, member_address=member_address, max_bytes=max_bytes, expected_uid=record.uid
        )
        copies.append((record, item, copy))
        if isinstance(copy, MemberCopy):
            gesture = gesture_between(record.partstat, copy.partstat)
            if gesture is not Gesture.NONE:
                intents.append(MemberGesture(record.uid, gesture))
    return Readings(tuple(intents), tuple(copies))


def plan_after_fetch(desired: Mapping[str, DesiredItem], readings: Readings) -> Plan:
    """Step 2b: write the fetched copies back, given `desired` after the intents were applied.

    A copy already equal to ours (same fingerprint and PARTSTAT: an echo, a server's
    normalisation, or only the member's alarms) is `Remember`ed with its new ETag; one that
    differs is overwritten with ours merged with the member's VALARMs; an unreadable one is
    overwritten with ours; one that left the view is deleted.
    """
    actions: list[Action] = []
    for record, fetched, copy in readings.copies:
        item = desired.get(record.uid)
        if item is None:
            actions.append(Delete(record.uid, fetched.href, fetched.etag))
        elif isinstance(copy, BadMemberData):
            actions.append(_update(item, fetched.href, fetched.etag, item.body, False))
        elif copy.fingerprint == item.fingerprint and copy.partstat == item.partstat:
            actions.append(Remember(_record(item, fetched.href, fetched.etag, copy.has_alarms)))
        else:
            ours = Calendar.from_ical(item.body)
            body = bytes(merge_member_copy(ours, copy.calendar).to_ical())
            actions.append(_update(item, fetched.href, fetched.etag, body, copy.has_alarms))
    return Plan(tuple(actions))


def _create(item: DesiredItem) -> Create:
    return Create(item.uid, item.body, _record(item, None, None, False))


def _update(item: DesiredItem, href: str, etag: str, body: bytes, alarms: bool) -> Update:
    return Update(item.uid, href, etag, body, _record(item, href, None, alarms))


def _record(item: DesiredItem, href: str | None, etag: str | None, alarms: bool) -> SyncRecord:
    return SyncRecord(item.uid, href, etag, item.fingerprint, item.material, item.partstat, alarms)

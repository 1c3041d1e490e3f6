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

A moved occurrence has a new UID (a one-off task the host moves gets a new occurrence id), yet
the member's alarms on it are theirs to keep. When a task's every desired item is new (none has
a record: the host moved or re-planned it) while a copy the member may have put alarms on left
the view, step 1 fetches the leaving copies instead of deleting them and holds back the new
items' Creates; step 2 creates them, each with the alarms of the leaving copy of the same task
in the same place in time order, and deletes the leaving copies. An occurrence that merely
passes out of the window does not pass its alarms on: its series still has recorded items
(unless a sparse series has one occurrence in the window at a time, and the next one enters
in the very run in which the last one leaves).

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

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from icalendar import Calendar, Component

from plugin.sync.fingerprint import fingerprint, material_fingerprint, prop_values
from plugin.sync.gestures import (
    ACCEPTED,
    BadMemberData,
    BadReason,
    Gesture,
    MemberCopy,
    gesture_between,
    merge_member_copy,
    read_member_copy,
)
from plugin.sync.render import HELD_PREFIXES

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
    "tombstone",
]

log = logging.getLogger(__name__)


class StorageEmpty(RuntimeError):
    """The collection lists nothing though `records` say carecal wrote items into it."""

    def __init__(self, records: int) -> None:
        super().__init__(f"the collection is empty but {records} synced items were expected")
        self.records = records


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DesiredItem:
    """One copy as carecal wants it in the member's collection (see `desired_item`); `task`
    is its X-CARECAL-TASK."""

    uid: str
    body: bytes
    fingerprint: str
    material: str
    partstat: str
    cancelled: bool = False
    task: str = ""
    # A digest of what the copy is rendered from, kept in its record; the service may stand
    # in an item whose record holds the same digest for its rendering (`body` then empty:
    # the planner writes no such item, as its fingerprints are the record's).
    inputs: str = ""
    # What else the service keeps about the copy's rendering, in its record (the view's
    # advice marks: `view_sync.marks_of`); None: not known.
    marks: int | None = None
    sequence: int = 0  # the SEQUENCE in `body` (the task's version): see `_sequenced`


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
    inputs: str = ""  # the DesiredItem's `inputs` it was written from
    marks: int | None = None  # and its `marks`
    sequence: int = 0  # the SEQUENCE of the copy as carecal wrote it (0: not known)


@dataclass(frozen=True, slots=True)
class Fetched:
    """A body fetched from the collection (`calendar-multiget`)."""

    href: str
    etag: str
    body: bytes | None  # None: there, but too large for the client to read


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
    """The fetched copies, read: the member's intents and what each copy holds; `records`
    are the sync records they were read against (step 2 tells new items by them)."""

    intents: tuple[Intent, ...]
    copies: tuple[tuple[SyncRecord, Fetched, MemberCopy | BadMemberData], ...]
    records: Mapping[str, SyncRecord] = field(default_factory=dict)


# --- the planner ----------------------------------------------------------------------------


def desired_item(calendar: Calendar, inputs: str = "") -> DesiredItem:
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
        task=str(event.get("X-CARECAL-TASK", "")),
        inputs=inputs,
        sequence=_sequence_of(event),
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
    # A task moved (every item new) while copies with the member's alarms left the view:
    # read those copies first, and create the new items after (plan_after_fetch).
    leaving = {r.uid for r in live if r.uid not in desired and _may_have_alarms(r, remote)}
    held = {i.uid for items in _renewed(desired, records).values() for i in items}
    if not leaving:
        held = set()
    actions: list[Action] = []
    fetch: list[str] = []
    intents: list[Intent] = []
    for uid in sorted(records.keys() | desired.keys()):
        record, item = records.get(uid), desired.get(uid)
        if record is None:
            if item is not None and uid not in held:
                actions.append(_create(item))
        elif record.href is None:  # a tombstone: the member deleted their copy
            if item is None:
                actions.append(Forget(uid))
            elif item.material != record.material and not item.cancelled:
                actions.append(_create(item, after=record.sequence))
        elif (listed := remote.get(record.href)) is None:
            if item is None:
                actions.append(Forget(uid))
            else:
                intents.append(MemberDeleted(uid))
                changed = item.material != record.material and not item.cancelled
                actions.append(
                    _create(item, after=record.sequence) if changed else Remember(tombstone(record))
                )
        elif item is None:
            if held and uid in leaving:
                fetch.append(record.href)  # its alarms go to its successor
            else:
                actions.append(Delete(uid, record.href, listed.etag))
        elif listed.etag != record.etag:
            fetch.append(record.href)  # the member's copy moved: read it before writing
        elif item.fingerprint != record.fingerprint or item.partstat != record.partstat:
            if record.member_alarms:
                fetch.append(record.href)  # keep their alarms: merge with the copy
            else:
                actions.append(
                    _update(item, record.href, listed.etag, item.body, False, record.sequence)
                )
    return Plan(tuple(actions), Fetch(tuple(fetch)), tuple(intents))


def tombstone(record: SyncRecord) -> SyncRecord:
    """`record` once the member's copy is gone from its href: no href, no ETag."""
    return SyncRecord(
        record.uid,
        None,
        None,
        record.fingerprint,
        record.material,
        inputs=record.inputs,
        marks=record.marks,
        sequence=record.sequence,
    )


def _replaced(copy: MemberCopy | BadMemberData) -> bool:
    """Another event of the member's own stands where carecal's copy was (they deleted the
    copy and created one at the same href: its UID is not the copy's)."""
    return isinstance(copy, BadMemberData) and copy.reason is BadReason.UID_MISMATCH


def read_member_copies(
    fetched: Sequence[Fetched],
    records: Mapping[str, SyncRecord],
    *,
    member_address: str,
    max_bytes: int,
) -> Readings:
    """Step 2a: parse the fetched copies and read the owner's gestures from them.

    Bodies at hrefs no record knows are ignored (not ours); one whose record has no
    fingerprint (carecal found it where it meant to create its copy, and never read it) is
    overwritten without reading a gesture from it. A copy carecal cannot read is
    logged with the reason (never its content) and then overwritten by `plan_after_fetch`:
    this is where the member's data is dropped, so this is where it is said.
    """
    by_href = {r.href: r for r in records.values() if r.href is not None}
    intents: list[Intent] = []
    copies: list[tuple[SyncRecord, Fetched, MemberCopy | BadMemberData]] = []
    for item in sorted(fetched, key=lambda f: f.href):
        record = by_href.get(item.href)
        if record is None:
            continue
        copy = (
            BadMemberData(BadReason.TOO_LARGE, "too large to read")
            if item.body is None
            else read_member_copy(
                item.body,
                member_address=member_address,
                max_bytes=max_bytes,
                expected_uid=record.uid,
            )
        )
        copies.append((record, item, copy))
        if _replaced(copy):
            # Never overwritten (a server refuses a UID change, and it is the member's event):
            # read as the copy deleted, a pass, and its place left to them.
            log.warning(
                "member copy replaced by another event; read as deleted",
                extra={"uid": record.uid, "href": item.href},
            )
            if record.fingerprint:
                intents.append(MemberDeleted(record.uid))
        elif isinstance(copy, BadMemberData):
            log.warning(
                "member copy ignored",
                extra={
                    "uid": record.uid,
                    "href": item.href,
                    "reason": copy.reason.value,
                    "detail": copy.detail,
                },
            )
        elif not record.fingerprint:
            # carecal met this object where it meant to create its copy (a run that stopped
            # before storing its record, or a collection left from an earlier account) and
            # never read it: what it says was never an answer to a copy carecal wrote, so it
            # is overwritten, not read as a gesture.
            log.info("unrecorded copy overwritten", extra={"uid": record.uid, "href": item.href})
        elif _stale_claim(copy, record):
            # An app put back the copy it had cached while the member held the task (it
            # wrote without If-Match, or chose its own over the server's), after she gave it
            # up: its ACCEPTED is carecal's rendering of then, not an answer to this copy.
            # Written over. (Any other answer on an older copy is read as always.)
            log.warning(
                "member copy from before carecal's last write claims nothing",
                extra={"uid": record.uid, "href": item.href},
            )
        else:
            gesture = gesture_between(record.partstat, copy.partstat)
            if gesture is not Gesture.NONE:
                intents.append(MemberGesture(record.uid, gesture))
    return Readings(tuple(intents), tuple(copies), dict(records))


def plan_after_fetch(desired: Mapping[str, DesiredItem], readings: Readings) -> Plan:
    """Step 2b: write the fetched copies back, given `desired` after the intents were applied.

    A copy already equal to ours (same fingerprint and PARTSTAT: an echo, a server's
    normalisation, or only the member's alarms) is `Remember`ed with its new ETag; one that
    differs is overwritten with ours merged with the member's VALARMs; an unreadable one is
    overwritten with ours; one that left the view is deleted. When such a copy was read
    because its task moved (see the module docstring), the task's new items are created
    here, with the member's alarms of the copies they replace.
    """
    actions: list[Action] = []
    leaving = [(record, copy) for record, _, copy in readings.copies if record.uid not in desired]
    if leaving:
        actions += _create_moved(desired, readings.records, leaving)
    for record, fetched, copy in readings.copies:
        item = desired.get(record.uid)
        # Past what carecal wrote last, and past what the member's app made of it.
        after = record.sequence
        if isinstance(copy, MemberCopy):
            after = max(after, _sequence_of(copy.calendar.walk("VEVENT")[0]))
        if _replaced(copy):
            actions.append(Remember(tombstone(record)) if item is not None else Forget(record.uid))
        elif item is None:
            actions.append(Delete(record.uid, fetched.href, fetched.etag))
        elif isinstance(copy, BadMemberData):
            actions.append(_update(item, fetched.href, fetched.etag, item.body, False, after))
        elif copy.fingerprint == item.fingerprint and copy.partstat == item.partstat:
            kept = _record(item, fetched.href, fetched.etag, copy.has_alarms, after)
            actions.append(Remember(kept))
        elif not copy.has_alarms:
            actions.append(_update(item, fetched.href, fetched.etag, item.body, False, after))
        else:
            body = bytes(merge_member_copy(item.body, copy.calendar).to_ical())
            actions.append(_update(item, fetched.href, fetched.etag, body, True, after))
    return Plan(tuple(actions))


def _may_have_alarms(record: SyncRecord, remote: Mapping[str, RemoteItem]) -> bool:
    """The member's copy is listed and had alarms, or changed since our write (perhaps they
    just added one)."""
    listed = remote.get(record.href or "")
    return listed is not None and (record.member_alarms or listed.etag != record.etag)


def _renewed(
    desired: Mapping[str, DesiredItem], records: Mapping[str, SyncRecord]
) -> dict[str, list[DesiredItem]]:
    """By task, in UID (time) order, the desired items of tasks none of whose desired items
    has a record: a task the host just moved or re-planned, or just added."""
    recorded = {i.task for i in desired.values() if i.uid in records}
    renewed: dict[str, list[DesiredItem]] = {}
    for uid in sorted(desired):
        item = desired[uid]
        if item.task and item.task not in recorded:
            renewed.setdefault(item.task, []).append(item)
    return renewed


def _create_moved(
    desired: Mapping[str, DesiredItem],
    records: Mapping[str, SyncRecord],
    leaving: Sequence[tuple[SyncRecord, MemberCopy | BadMemberData]],
) -> list[Action]:
    """The Creates `plan_view_sync` held back: every item of a renewed task, the n-th one
    with the alarms of the n-th leaving copy of that task.

    Step 1 held them back exactly when it fetched leaving copies, which is when `leaving` is
    not empty here. (A copy that left the view between the two steps, through a concurrent
    change, can make this create an item step 1 created already; the server refuses the
    second Create and the next run repairs the record.)"""
    sources: dict[str, list[MemberCopy]] = {}
    for _, copy in sorted(leaving, key=lambda pair: pair[0].uid):
        if isinstance(copy, MemberCopy) and copy.has_alarms:
            task = str(copy.calendar.walk("VEVENT")[0].get("X-CARECAL-TASK", ""))
            sources.setdefault(task, []).append(copy)
    actions: list[Action] = []
    for task, items in _renewed(desired, records).items():
        alarms_of = sources.get(task, [])
        for n, item in enumerate(items):
            if n >= len(alarms_of):
                actions.append(_create(item))
                continue
            theirs = alarms_of[n]
            merged = merge_member_copy(item.body, theirs.calendar, their_uid=theirs.uid)
            body = bytes(merged.to_ical())
            actions.append(Create(item.uid, body, _record(item, None, None, True, item.sequence)))
    return actions


def _create(item: DesiredItem, after: int = -1) -> Create:
    body, sequence = _sequenced(item, item.body, after)
    return Create(item.uid, body, _record(item, None, None, False, sequence))


def _update(
    item: DesiredItem, href: str, etag: str, body: bytes, alarms: bool, after: int
) -> Update:
    body, sequence = _sequenced(item, body, after)
    return Update(item.uid, href, etag, body, _record(item, href, None, alarms, sequence))


def _record(
    item: DesiredItem, href: str | None, etag: str | None, alarms: bool, sequence: int
) -> SyncRecord:
    return SyncRecord(
        item.uid,
        href,
        etag,
        item.fingerprint,
        item.material,
        item.partstat,
        alarms,
        item.inputs,
        item.marks,
        min(sequence, MAX_SEQUENCE),
    )


def _sequenced(item: DesiredItem, body: bytes, after: int) -> tuple[bytes, int]:
    r"""`body` with a SEQUENCE past `after` (the copy's as carecal last wrote it, or as the
    member's app left it), and that SEQUENCE: DESIGN bumps it on every change carecal makes.
    The rendering's own (the task's version) when it is past already. SEQUENCE counts in no
    fingerprint, so the copy is the same copy whatever it is.

    >>> item = DesiredItem("u", b"", "f", "m", "NEEDS-ACTION", sequence=2)
    >>> _sequenced(item, b"BEGIN:VEVENT\r\nSEQUENCE:2\r\nEND:VEVENT\r\n", 4)
    (b'BEGIN:VEVENT\r\nSEQUENCE:5\r\nEND:VEVENT\r\n', 5)
    >>> _sequenced(item, b"BEGIN:VEVENT\r\nSEQUENCE:2\r\nEND:VEVENT\r\n", 1)[1]
    2
    """
    if item.sequence > after:
        return body, item.sequence
    rendered = b"\r\nSEQUENCE:%d\r\n" % item.sequence
    if rendered not in body:
        return body, item.sequence  # not carecal's rendering (a test's stand-in)
    bumped = min(after + 1, MAX_SEQUENCE)  # an app's may be any size; the store's is 32 bits
    return body.replace(rendered, b"\r\nSEQUENCE:%d\r\n" % bumped, 1), bumped


MAX_SEQUENCE = 2**31 - 1  # view_records.sequence is an INTEGER


def _stale_claim(copy: MemberCopy, record: SyncRecord) -> bool:
    """The copy says ACCEPTED as carecal rendered it while the member held the task (its
    title "[Dig] …"), though carecal's last write had her not holding it, and it is older
    than that write: its SEQUENCE is below the record's (apps keep SEQUENCE or raise it,
    never lower it), and it is not the copy carecal last wrote (an instance from before
    SEQUENCE was kept writes the task's version during a rolling upgrade). A copy without a
    SEQUENCE, or a record from before it was kept, says nothing."""
    if copy.partstat != ACCEPTED or record.partstat == ACCEPTED:
        return False
    if record.sequence <= 0 or copy.fingerprint == record.fingerprint:
        return False
    event = copy.calendar.walk("VEVENT")[0]
    if not str(event.get("SUMMARY", "")).startswith(HELD_PREFIXES):
        return False
    return "SEQUENCE" in event and _sequence_of(event) < record.sequence


def _sequence_of(event: Component) -> int:
    """An event's SEQUENCE; 0 when it has none or one that is not a number."""
    try:
        value = int(event.get("SEQUENCE", 0))
    except (TypeError, ValueError):
        return 0
    return max(value, 0)

"""What staff work looks like in members' copies: a staff visit held by Sara, and a targeted
offer ("staff asked you") that stays an offer until the member answers it."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from plugin.domain.model import Claim, OccurrenceRecord, TargetedOffer
from plugin.sync.render import Relation, relation_of, render_event
from tests.unit.sync.support import ANNA, BO, CY, SARA, attendee_partstat, record, render_input

ASKED_AT = datetime(2027, 3, 3, tzinfo=UTC)


def asked(member_id: str = "m-anna", **changes: object) -> OccurrenceRecord:
    base = record(**changes)  # type: ignore[arg-type]
    return replace(base, offers=(TargetedOffer(base.occurrence.id, member_id, ASKED_AT),))


def summary_and_description(**kwargs: object) -> tuple[str, str, str]:
    [event] = render_event(render_input(**kwargs)).walk("VEVENT")  # type: ignore[arg-type]
    return str(event["SUMMARY"]), str(event["DESCRIPTION"]), str(event["STATUS"])


def test_a_staff_visit_is_held_by_sara_and_shown_as_hers_to_relatives() -> None:
    visit = dict(category="visit", kind="visit", assigned_member_id="m-sara")
    the_task = replace(render_input().task, **visit)  # type: ignore[arg-type]
    held = record(holders=("m-sara",))
    for member, expected in ((ANNA, "[Sara] Besøg"), (BO, "[Sara] Visit"), (SARA, "[Dig] Besøg")):
        inp = render_input(member, held, the_task)
        [event] = render_event(inp).walk("VEVENT")
        assert str(event["SUMMARY"]) == expected
        assert str(event["STATUS"]) == "CONFIRMED"
        mine = member is SARA
        assert str(event["TRANSP"]) == ("OPAQUE" if mine else "TRANSPARENT")
        assert attendee_partstat(event) == ("ACCEPTED" if mine else "NEEDS-ACTION")
    # Before the claim is stored, the assignment alone says who holds it.
    inp = render_input(ANNA, record(), the_task)
    assert relation_of(inp) is Relation.TAKEN
    [event] = render_event(inp).walk("VEVENT")
    assert str(event["SUMMARY"]) == "[Sara] Besøg"


@pytest.mark.parametrize(
    ("member", "summary", "line"),
    [
        (ANNA, "[Til dig] Indkøb", "Personalet har spurgt, om du kan tage denne opgave."),
        (replace(BO, id="m-anna"), "[For you] Shopping", "Staff have asked whether you can"),
    ],
)
def test_a_targeted_offer_reads_for_you_in_the_asked_members_copy(
    member: object, summary: str, line: str
) -> None:
    got_summary, description, status = summary_and_description(member=member, occurrence=asked())
    assert got_summary == summary
    assert description.startswith(line)
    assert status == "TENTATIVE"
    [event] = render_event(render_input(member, asked())).walk("VEVENT")  # type: ignore
    assert attendee_partstat(event) == "NEEDS-ACTION"  # still theirs to answer
    assert str(event["TRANSP"]) == "TRANSPARENT"


def test_only_the_asked_member_sees_it_and_only_while_it_is_open() -> None:
    # Another member sees a plain open task.
    assert summary_and_description(member=CY, occurrence=asked())[0] == "[Ledig] Indkøb"
    # Once Anna took it, it is hers; once she passed, it is open again, without the line.
    took = asked()
    took = replace(took, claims=(Claim(took.occurrence.id, "m-anna", "caldav", ASKED_AT),))
    assert summary_and_description(occurrence=took)[0] == "[Dig] Indkøb"
    got, description, _ = summary_and_description(occurrence=asked(passers=("m-anna",)))
    assert got == "[Ledig] Indkøb" and "Personalet" not in description
    # Someone else filled it: it is theirs, whatever staff asked.
    got, description, _ = summary_and_description(occurrence=asked(holders=("m-cy",)))
    assert got == "[Cy] Indkøb" and "Personalet" not in description


def test_asked_wins_over_suggested() -> None:
    assert summary_and_description(occurrence=asked(), suggested=True)[0] == "[Til dig] Indkøb"

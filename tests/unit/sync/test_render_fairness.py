"""What fairness puts into a member's copy (`plugin.sync.render`): the suggestion marker and
line, and the over-capacity line on what they hold; both change the fingerprint, so the view
sync rewrites the copy when they change."""

from __future__ import annotations

from dataclasses import replace

from plugin.sync.fingerprint import fingerprint
from tests.unit.sync.support import ANNA, BO, record, render, vevent

EN = replace(ANNA, locale="en")


def test_a_suggested_offer_reads_forslag_with_a_line_saying_why() -> None:
    event = vevent(render(ANNA, suggested=True))
    assert str(event["SUMMARY"]) == "[Forslag] Indkøb"
    assert str(event["DESCRIPTION"]).startswith("Foreslået til dig: du har plads til opgaven")
    english = vevent(render(EN, suggested=True))
    assert str(english["SUMMARY"]) == "[Suggested] Shopping"
    assert str(english["DESCRIPTION"]).startswith("Suggested for you: you have room for it")
    assert fingerprint(render(ANNA, suggested=True)) != fingerprint(render(ANNA))


def test_only_an_offer_is_suggested() -> None:
    held = vevent(render(ANNA, record(holders=("m-anna",)), suggested=True))
    taken = vevent(render(ANNA, record(holders=("m-bo",)), suggested=True))
    for event in (held, taken):
        assert "Foreslået" not in str(event["DESCRIPTION"])
    assert str(held["SUMMARY"]) == "[Dig] Indkøb"


def test_what_a_member_holds_over_their_capacity_says_so() -> None:
    mine = record(holders=("m-anna",))
    event = vevent(render(ANNA, mine, overloaded=True))
    assert str(event["SUMMARY"]) == "[Dig] Indkøb"
    assert "end du har sagt, du kan klare" in str(event["DESCRIPTION"])
    assert "more in this period than you said" in str(
        vevent(render(EN, mine, overloaded=True))["DESCRIPTION"]
    )
    assert fingerprint(render(ANNA, mine, overloaded=True)) != fingerprint(render(ANNA, mine))
    # Never on someone else's or an open copy, and never another member's load.
    assert "kapacitet" not in str(vevent(render(BO, mine, overloaded=True))["DESCRIPTION"])
    assert "klare" not in str(vevent(render(ANNA, overloaded=True))["DESCRIPTION"])

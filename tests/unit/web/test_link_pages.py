"""The claim page's HTML: language, visibility, escaping, buttons, the CSP's style hash."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from plugin.domain.claims import ClaimOutcome
from plugin.domain.model import Circle, Citizen, Claim, Member, Occurrence, OccurrenceRecord, Task
from plugin.services.claim_links import ClaimPage
from plugin.services.claiming import Ask
from plugin.services.links import Refusal
from plugin.services.ports import MemberLink
from plugin.sync.render import Relation
from plugin.web.link_pages import (
    CSP,
    claim_page_html,
    language_of,
    message_page_html,
    when_text,
)

CPH = ZoneInfo("Europe/Copenhagen")
NOW = datetime(2027, 3, 1, 9, tzinfo=UTC)
START = datetime(2027, 3, 16, 10, tzinfo=CPH)
ANNA = Member("m-anna", "Anna", "relative", "full")
BO = Member("m-bo", "Bo <b>", "network", "limited", locale="en-GB")
TASK = Task("north", "t-1", "c-1", 1, "task", "doctor_escort", START.replace(tzinfo=None),
            START.replace(tzinfo=None) + timedelta(hours=1), "Europe/Copenhagen",
            details="Dr. Hansen <script>alert(1)</script>", location="Vestergade 3")  # fmt: skip
RECORD = OccurrenceRecord(Occurrence("o-1", "t-1", START, START + timedelta(hours=1)), 1)
CIRCLE = Circle(Citizen("north", "c-1", 'Fru "Jensen" & co'), 1, (ANNA, BO))
LINK = MemberLink("AAAAAAAAAAAAAAAA", "north", "m-anna", bytes(32), NOW)


def page(member: Member = ANNA, **changes: object) -> ClaimPage:
    base = ClaimPage("TOKEN", LINK, CIRCLE, member, TASK, RECORD, Relation.OFFERED, False)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_danish_page_with_details_at_full_visibility() -> None:
    html = claim_page_html(page(), asks=(Ask.CLAIM, Ask.PASS), form_token="1.abc")
    assert '<html lang="da">' in html
    assert "<h1>Ledsagelse til læge</h1>" in html
    assert "tirsdag den 16. marts 2027, kl. 10.00\N{EN DASH}11.00" in html
    assert '<time datetime="2027-03-16T10:00:00+01:00">' in html
    assert "Vestergade 3" in html
    assert "Dr. Hansen &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    assert "Fru &quot;Jensen&quot; &amp; co \N{EN DASH} omsorg" in html
    assert re.findall(r'<button type="submit" name="action" value="(\w+)"', html) == [
        "claim",
        "pass",
    ]
    assert "<legend>Hvad vil du?</legend>" in html
    assert '<input type="hidden" name="form_token" value="1.abc">' in html
    assert 'action="/c/TOKEN"' in html
    assert 'role="status"' not in html


def test_an_english_page_at_limited_visibility_shows_no_details() -> None:
    html = claim_page_html(page(BO), asks=(), form_token="x")
    assert '<html lang="en">' in html
    assert "Tuesday 16 March 2027, 10:00\N{EN DASH}11:00" in html
    assert "Hansen" not in html and "Vestergade" not in html
    assert "<form" not in html  # no buttons, no form


def test_holders_are_named_by_name_only_and_escaped() -> None:
    taken = replace(RECORD, claims=(Claim("o-1", "m-bo", "link", NOW),))
    html = claim_page_html(page(record=taken, relation=Relation.TAKEN), asks=(), form_token="x")
    assert "Taget af Bo &lt;b&gt;." in html
    gone = replace(RECORD, claims=(Claim("o-1", "m-gone", "caldav", NOW),))
    html = claim_page_html(page(record=gone, relation=Relation.TAKEN), asks=(), form_token="x")
    assert "Taget af en anden." in html


def test_the_outcome_is_announced_as_a_status() -> None:
    html = claim_page_html(
        page(BO), asks=(Ask.RELEASE,), form_token="x", outcome=ClaimOutcome.FULL, acted=True
    )
    assert (
        '<p class="notice" role="status">Sorry \N{EN DASH} someone else took the last place.</p>'
        in html
    )
    refused = claim_page_html(page(), asks=(), form_token="x", outcome=None, acted=True)
    assert "Denne opgave kan du ikke tage." in refused


def test_message_pages_in_both_languages() -> None:
    assert "<h1>Linket findes ikke</h1>" in message_page_html(Refusal.UNKNOWN, "da")
    assert "<h1>This task is over</h1>" in message_page_html(Refusal.OVER, "en")
    assert '<html lang="en">' in message_page_html("busy", "en")


def test_an_occurrence_over_midnight_names_both_days() -> None:
    late = datetime(2027, 3, 16, 23, 30, tzinfo=CPH)
    assert when_text(late, late + timedelta(hours=1), "en") == (
        "Tuesday 16 March 2027, 23:30 \N{EN DASH} Wednesday 17 March 2027, 00:30"
    )


def test_languages_fall_back_to_danish() -> None:
    assert [language_of(x) for x in ("da", "da-DK", "en_GB", "EN", "de", "", None)] == [
        "da", "da", "en", "en", "da", "da", "da",
    ]  # fmt: skip


def test_the_inline_style_is_the_one_the_csp_allows() -> None:
    html = claim_page_html(page(), asks=(), form_token="x")
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert style
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in CSP
    assert "frame-ancestors 'none'" in CSP and "default-src 'none'" in CSP
    assert ":focus-visible" in style.group(1)
    assert "http" not in html.split("<body>")[0]  # nothing loaded from elsewhere

"""The staff dashboard's HTML and its SVG chart, without a server: escaping, well-formed SVG,
both languages, and the accessibility structure."""

from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from plugin.domain.fairness import Load, Window
from plugin.domain.model import (
    Capacity,
    Circle,
    Citizen,
    Member,
    Occurrence,
    OccurrenceRecord,
    ReliefRequest,
    Task,
)
from plugin.domain.staffing import Risk
from plugin.services.dashboard import DashboardData, MemberLoad, Slot
from plugin.web.load_chart import hours_text, load_chart_svg
from plugin.web.staff_pages import (
    STAFF_CSP,
    circle_page_html,
    index_page_html,
    login_page_html,
)

CPH = ZoneInfo("Europe/Copenhagen")
NOW = datetime(2027, 3, 14, 12, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = 'Anna <script>alert("x")</script> & co'
ANNA = Member("m-anna", HOSTILE, "relative", "full", capacity=Capacity(hours_per_week=2))
SARA = Member("m-sara", "Sara", "staff", "full")
CITIZEN = Citizen("north", "c-1", "Fru <b>Jensen</b>")
START = datetime(2027, 3, 16, 10, tzinfo=CPH)
TASK = Task("north", "t-1", "c-1", 1, "task", "shopping", START.replace(tzinfo=None),
            START.replace(tzinfo=None) + timedelta(hours=1), "Europe/Copenhagen")  # fmt: skip
RECORD = OccurrenceRecord(Occurrence("o-1", "t-1", START, START + timedelta(hours=1)), 1)


def data() -> DashboardData:
    slot = Slot(TASK, RECORD, holders=(), asked=(HOSTILE,), risk=Risk.AT_RISK, due=START)
    return DashboardData(
        circle=Circle(CITIZEN, 1, (ANNA, SARA)),
        now=NOW,
        coming=(slot,),
        attention=(slot,),
        window=Window(datetime(2027, 3, 8, tzinfo=CPH), datetime(2027, 4, 5, tzinfo=CPH)),
        loads=(
            MemberLoad(ANNA, Load(2.0, 1), Load(9.5, 5), 8.0, None),
            MemberLoad(SARA, Load(), Load(1.0, 1), None, None),
        ),
        relief=(ReliefRequest("north", "r-1", "c-1", "m-anna", NOW, NOW + timedelta(days=7)),),
    )


def svg_of(html: str) -> ET.Element:
    found = re.search(r"<svg .*?</svg>", html, re.S)
    assert found
    return ET.fromstring(found.group(0))


@pytest.mark.parametrize("language", ["da", "en"])
def test_host_data_is_escaped_everywhere(language: str) -> None:
    html = circle_page_html(data(), language, lang_param=None, logout_token="tok")
    assert "<script" not in html and "<b>" not in html
    assert "Anna &lt;script&gt;" in html and "Fru &lt;b&gt;Jensen&lt;/b&gt;" in html
    svg_of(html)  # parses, hostile name and all


def test_the_chart_draws_bars_a_capacity_line_and_words() -> None:
    svg = ET.fromstring(load_chart_svg(data().loads, "en"))
    assert svg.get("role") == "img"
    assert svg.findtext(f"{SVG}title") == "Load against capacity"
    desc = svg.findtext(f"{SVG}desc", "")
    assert "9.5 hours this week and the next three, 2 hours in the four weeks before" in desc
    assert "capacity 8 hours" in desc and "Sara: 1 hour this week" in desc
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "9.5 h over" in texts and "2 h" in texts  # the number on every bar, "over" in words
    dashed = [line for line in svg.iter(f"{SVG}line") if line.get("stroke-dasharray")]
    assert len(dashed) == 2  # the legend's and Anna's capacity (Sara declared none)
    red = [r for r in svg.iter(f"{SVG}rect") if r.get("fill") == "#a4161a"]
    assert len(red) == 1


def test_hours_are_written_the_local_way() -> None:
    assert (hours_text(1.5, "da"), hours_text(1.5, "en"), hours_text(2.0, "da")) == (
        "1,5",
        "1.5",
        "2",
    )


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("da", ("Mangler folk", "Belastning", "I fare", "Spurgt:", "Over kapacitet", "Log ud")),
        ("en", ("Needs people", "Load", "At risk", "Asked:", "Over capacity", "Sign out")),
    ],
)
def test_both_languages_and_the_page_structure(language: str, words: tuple[str, ...]) -> None:
    html = circle_page_html(data(), language, lang_param=language, logout_token="tok")
    assert f'<html lang="{language}">' in html
    for word in words:
        assert word in html, word
    assert html.count("<h1>") == 1 and html.count("<h2 ") == 4
    assert html.count("<caption>") == 4
    assert html.count('<th scope="col">') == 5 + 6 + 4 + 4
    assert 'name="form_token" value="tok"' in html
    other = "en" if language == "da" else "da"
    assert f'href="/staff/circles/c-1?lang={other}"' in html
    assert f'href="/staff/?lang={language}"' in html  # the chosen language is kept


def test_the_style_sheet_is_the_one_the_csp_allows() -> None:
    html = login_page_html("da")
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert style
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in STAFF_CSP
    assert "<script" not in html


def test_the_index_lists_circles_with_safe_links() -> None:
    odd = Citizen("north", "c:1/x", "Hr. Berg")
    html = index_page_html([CITIZEN, odd], "en", lang_param=None, logout_token=None)
    assert 'href="/staff/circles/c%3A1%2Fx"' in html
    assert "Sign out" not in html  # a bearer token has no session to end
    assert "There are no citizens yet." in index_page_html(
        [], "en", lang_param=None, logout_token=None
    )

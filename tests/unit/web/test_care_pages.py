"""The setup page's words: counts in the singular and plural, decimals and dates written the
way each language writes them."""

from __future__ import annotations

from datetime import date

import pytest

from plugin.domain.fairness import Load
from plugin.web.care_pages import _WORDS, _count
from plugin.web.link_pages import day_text
from plugin.web.staff_pages import _WORDS as STAFF_WORDS
from plugin.web.staff_pages import _load_cell


@pytest.mark.parametrize(
    ("language", "unit", "n", "text"),
    [
        ("da", "hour", 1, "1 time"),
        ("da", "hour", 1.5, "1,5 timer"),
        ("da", "hour", 0, "0 timer"),
        ("da", "task", 1, "1 opgave"),
        ("da", "task", 3, "3 opgaver"),
        ("en", "hour", 1, "1 hour"),
        ("en", "hour", 2.5, "2.5 hours"),
        ("en", "task", 1, "1 task"),
        ("en", "task", 0, "0 tasks"),
    ],
)
def test_counts_agree_with_their_number(language: str, unit: str, n: float, text: str) -> None:
    assert _count(_WORDS[language], unit, n, language) == text


def test_a_day_is_written_as_each_language_writes_it() -> None:
    assert day_text(date(2026, 11, 30), "da") == "30. november 2026"
    assert day_text(date(2026, 11, 30), "en") == "30 November 2026"


def test_the_staff_page_counts_one_task_as_one() -> None:
    assert _load_cell(Load(1.0, 1), STAFF_WORDS["en"], "en") == "1 h, 1 task"
    assert _load_cell(Load(2.5, 2), STAFF_WORDS["en"], "en") == "2.5 h, 2 tasks"
    assert _load_cell(Load(1.5, 1), STAFF_WORDS["da"], "da") == "1,5 t, 1 opg."

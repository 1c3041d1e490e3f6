"""The member's own part of the setup page, in Danish and English: how much they can take on
(hours and tasks per week, weekly availability, a pause) and asking for relief.

Same rules as the rest of the setup page (`setup_pages`, `links`): plain HTML forms without
JavaScript, every input labelled, hints tied to their inputs (`aria-describedby`), a
`role="status"` notice after saving and `role="alert"` for mistakes, escaped values, and every
POST protected by the page's form token and the same-origin check (`links._setup_page` checks
the origin; `care_action` checks the form token).

    POST /setup/{token}  action=capacity citizen_id=c-123 hours_per_week=2,5 tasks_per_week=
                         day_0=2 from_0=09:00 to_0=12:00 paused_until=2027-03-20 form_token=…
    POST /setup/{token}  action=relief citizen_id=c-123 relief_from=2027-03-08
                         relief_to=2027-03-14 form_token=…
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from html import escape
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from plugin.domain.capacity import CareField, CareValues
from plugin.domain.model import AvailabilityWindow, Capacity
from plugin.services.links import check_form_token, form_token
from plugin.services.member_care import (
    CircleCareView,
    ask_relief,
    open_member_care,
    save_capacity,
)
from plugin.services.relief import ReliefOutcome, ReliefRefusal
from plugin.services.setup import SetupPage
from plugin.web.body import first_value
from plugin.web.link_pages import day_text, language_of
from plugin.web.load_chart import hours_text
from plugin.web.relief_api import MAX_YEAR, MIN_YEAR
from plugin.web.setup_pages import setup_page_html
from plugin.web.state import state_of

__all__ = ["CARE_ACTIONS", "care_action", "care_html", "parse_capacity_form"]

CARE_ACTIONS = ("capacity", "relief")
_REFUSED = {ReliefRefusal.INVALID_PERIOD: "bad_period", ReliefRefusal.ROLE: "bad_role"}
EXTRA_ROWS = 2  # empty availability rows to add windows with
MAX_ROWS = 14

_WEEKDAYS = {
    "da": ("mandag", "tirsdag", "onsdag", "torsdag", "fredag", "lørdag", "søndag"),
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
}

_WORDS: dict[str, dict[str, str]] = {
    "da": {
        "capacity_h": "Hvor meget kan du tage?",
        "capacity_p": (
            "Fortæl, hvor meget du kan hjælpe med. Vi foreslår dig opgaver ud fra det, og "
            "kommunen får besked, hvis du får flere, end du kan klare. Du siger stadig selv ja "
            "eller nej til hver opgave."
        ),
        "for": "Omsorg for {name}",
        "load": "I de fire uger fra {start} har du {hours} og {tasks}.",
        "limit": " Din grænse er {limit} på fire uger.",
        "hour_one": "{n} time",
        "hour_many": "{n} timer",
        "task_one": "{n} opgave",
        "task_many": "{n} opgaver",
        "limit_and": " og ",
        "over": " Det er mere, end du har sagt, du kan klare.",
        "hours": "Timer om ugen",
        "tasks": "Opgaver om ugen",
        "empty_no_limit": "Tomt: ingen grænse.",
        "when_l": "Hvornår kan du?",
        "when_hint": "Tomt: når som helst. Ryd en linje for at fjerne den.",
        "day": "Dag",
        "from": "Fra",
        "to": "Til",
        "none_day": "(ingen)",
        "row": "Tidsrum {n}",
        "pause": "Pause til og med",
        "pause_hint": "Vi foreslår dig ingen opgaver til og med den dag. Tomt: ingen pause.",
        "own": "Sat af dig.",
        "host": "Fra kommunen.",
        "save": "Gem",
        "saved": "Gemt. Dine forslag i kalenderen følger med.",
        "relief_h": "Bed om aflastning",
        "relief_p": (
            "Har du brug for en pause fra dine opgaver i en periode? Dine opgaver i perioden "
            "gives videre til de andre, og kommunen får besked, så de kan sørge for "
            "aflastning. Du kan også oprette en aftale med titlen \u00bbAflastning\u00ab over "
            "perioden i din omsorgskalender."
        ),
        "relief_from": "Fra",
        "relief_to": "Til og med",
        "relief_button": "Bed om aflastning",
        "relief_done": (
            "Tak. Vi har bedt kommunen om aflastning, og {n} af dine opgaver er givet videre "
            "til de andre."
        ),
        "relief_list": "Dine anmodninger",
        "requested": "venter på kommunen",
        "approved": "godkendt",
        "rejected": "afvist",
        "error": "Tjek venligst: {fields}.",
        "bad_hours": "timer om ugen (et tal fra 0 til 168)",
        "bad_tasks": "opgaver om ugen (et helt tal fra 0)",
        "bad_window": "tidsrum (vælg dag, og slut efter start)",
        "bad_pause": "pause (en dato)",
        "bad_period": "perioden (slut samme dag som eller efter start, højst et år, ikke forbi)",
        "bad_circle": "kredsen (du er ikke med i den længere)",
        "bad_role": "rollen (personale beder om aflastning hos deres arbejdsgiver)",
    },
    "en": {
        "capacity_h": "How much can you take on?",
        "capacity_p": (
            "Tell us how much you can help with. We suggest tasks to you accordingly, and the "
            "municipality is told if you take on more than you can manage. You still say yes "
            "or no to every task yourself."
        ),
        "for": "Care for {name}",
        "load": "In the four weeks from {start} you hold {hours} and {tasks}.",
        "limit": " Your limit is {limit} in four weeks.",
        "hour_one": "{n} hour",
        "hour_many": "{n} hours",
        "task_one": "{n} task",
        "task_many": "{n} tasks",
        "limit_and": " and ",
        "over": " That is more than you said you can manage.",
        "hours": "Hours per week",
        "tasks": "Tasks per week",
        "empty_no_limit": "Empty: no limit.",
        "when_l": "When are you available?",
        "when_hint": "Empty: any time. Clear a line to remove it.",
        "day": "Day",
        "from": "From",
        "to": "To",
        "none_day": "(none)",
        "row": "Time {n}",
        "pause": "Pause through",
        "pause_hint": "We suggest no tasks to you through that day. Empty: no pause.",
        "own": "Set by you.",
        "host": "From the municipality.",
        "save": "Save",
        "saved": "Saved. The suggestions in your calendar follow.",
        "relief_h": "Ask for relief",
        "relief_p": (
            "Do you need a break from your tasks for a while? Your tasks in that period are "
            "passed on to the others, and the municipality is told so they can arrange relief. "
            "You can also create an event titled \N{LEFT DOUBLE QUOTATION MARK}Relief"
            "\N{RIGHT DOUBLE QUOTATION MARK} over the period in your care calendar."
        ),
        "relief_from": "From",
        "relief_to": "Through",
        "relief_button": "Ask for relief",
        "relief_done": (
            "Thank you. We have asked the municipality for relief, and {n} of your tasks were "
            "passed on to the others."
        ),
        "relief_list": "Your requests",
        "requested": "waiting for the municipality",
        "approved": "approved",
        "rejected": "declined",
        "error": "Please check: {fields}.",
        "bad_hours": "hours per week (a number from 0 to 168)",
        "bad_tasks": "tasks per week (a whole number from 0)",
        "bad_window": "times (choose a day, and end after the start)",
        "bad_pause": "pause (a date)",
        "bad_period": "the period (ending on or after its start, at most a year, not over)",
        "bad_circle": "the circle (you are no longer in it)",
        "bad_role": "your role (staff ask their employer for relief)",
    },
}


# --- reading the forms -----------------------------------------------------------------------


def _first(form: dict[str, list[str]], name: str) -> str:
    return next(iter(form.get(name, [])), "").strip()


_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])(?::[0-5][0-9])?")


def parse_capacity_form(form: dict[str, list[str]]) -> CareValues | list[str]:
    """The values of the capacity form, or the keys of the mistakes (`bad_*`)."""
    errors: list[str] = []
    hours: float | None = None
    tasks: int | None = None
    raw = first_value(form, "hours_per_week").replace(",", ".")
    if raw:
        try:
            hours = float(raw)
        except ValueError:
            errors.append("bad_hours")
        else:
            if not 0 <= hours <= 168:
                errors.append("bad_hours")
    raw = first_value(form, "tasks_per_week")
    if raw:
        if raw.isascii() and raw.isdigit() and int(raw) <= 1000:
            tasks = int(raw)
        else:
            errors.append("bad_tasks")
    windows: list[AvailabilityWindow] = []
    for n in range(MAX_ROWS):
        day, start, end = (first_value(form, f"{k}_{n}") for k in ("day", "from", "to"))
        if not (start or end):
            continue
        # A browser's time input sends HH:MM (HH:MM:SS with a step); nothing else is a time of
        # day here (`time.fromisoformat` takes "09:00+01:00", which no local time compares to).
        times = [_TIME.fullmatch(value) for value in (start, end)]
        if not (day.isascii() and day.isdigit()) or None in times:
            errors.append("bad_window")
            continue
        window = AvailabilityWindow(
            int(day), *(time(int(m[1]), int(m[2])) for m in times if m is not None)
        )
        if not 1 <= window.weekday <= 7 or window.end <= window.start:
            errors.append("bad_window")
            continue
        windows.append(window)
    paused: date | None = None
    raw = first_value(form, "paused_until")
    if raw:
        try:
            paused = date.fromisoformat(raw)
        except ValueError:
            errors.append("bad_pause")
    if errors:
        return sorted(set(errors))
    windows.sort(key=lambda w: (w.weekday, w.start, w.end))
    return CareValues(Capacity(hours, tasks), tuple(windows), paused)


# --- drawing them ----------------------------------------------------------------------------


def _number(value: float) -> str:
    """A form field's value: a decimal point, as `<input type="number">` takes it."""
    return f"{value:g}"


def _count(words: dict[str, str], unit: str, n: float, language: str) -> str:
    """ "1 time", "1,5 timer", "3 opgaver"; "1 hour", "2 tasks"."""
    text = hours_text(n, language) if unit == "hour" else str(n)
    return words[f"{unit}_one" if n == 1 else f"{unit}_many"].format(n=text)


def _source(view: CircleCareView, field: CareField, words: dict[str, str]) -> str:
    """Whose value the field holds: the member's own, or the municipality's; nothing for
    an empty field nobody set (the municipality gave none)."""
    if field in view.own:
        return words["own"]
    member = view.member
    given = {
        "capacity": member.capacity.hours_per_week is not None
        or member.capacity.tasks_per_week is not None,
        "availability": bool(member.availability),
        "paused_until": member.paused_until is not None,
    }
    return words["host"] if given[field] else ""


def _load_text(view: CircleCareView, language: str, words: dict[str, str]) -> str:
    standing = view.standing
    start = standing.window.start
    text = words["load"].format(
        start=day_text(start, language),
        hours=_count(words, "hour", round(standing.load.hours, 1), language),
        tasks=_count(words, "task", standing.load.tasks, language),
    )
    limits = []
    if standing.capacity_hours is not None:
        limits.append(_count(words, "hour", standing.capacity_hours, language))
    if standing.capacity_tasks is not None:
        limits.append(_count(words, "task", standing.capacity_tasks, language))
    if limits:
        text += words["limit"].format(limit=words["limit_and"].join(limits))
    if standing.over:
        text += words["over"]
    return text


def _day_select(name: str, label_id: str, chosen: int | None, language: str) -> str:
    words = _WORDS[language]
    options = [f'<option value=""{"" if chosen else " selected"}>{words["none_day"]}</option>']
    for number, day in enumerate(_WEEKDAYS[language], start=1):
        selected = " selected" if chosen == number else ""
        options.append(f'<option value="{number}"{selected}>{escape(day)}</option>')
    return f'<select id="{label_id}" name="{name}">{"".join(options)}</select>'


def _capacity_form(
    view: CircleCareView, n_circle: int, language: str, token: str, issued: str
) -> str:
    words = _WORDS[language]
    member = view.member
    prefix = f"c{n_circle}"
    capacity = member.capacity
    hours = "" if capacity.hours_per_week is None else _number(capacity.hours_per_week)
    tasks = "" if capacity.tasks_per_week is None else str(capacity.tasks_per_week)
    rows = []
    windows = list(member.availability)[: MAX_ROWS - EXTRA_ROWS]
    for n in range(len(windows) + EXTRA_ROWS):
        window = windows[n] if n < len(windows) else None
        ident = f"{prefix}-w{n}"
        select = _day_select(
            f"day_{n}", f"{ident}-day", None if window is None else window.weekday, language
        )
        start = "" if window is None else window.start.strftime("%H:%M")
        end = "" if window is None else window.end.strftime("%H:%M")
        row_label = escape(words["row"].format(n=n + 1))
        rows.append(
            f"<fieldset>\n<legend>{row_label}</legend>\n"
            f'<label for="{ident}-day">{escape(words["day"])}</label> '
            f"{select}\n"
            f'<label for="{ident}-from">{escape(words["from"])}</label> '
            f'<input type="time" id="{ident}-from" name="from_{n}" value="{start}">\n'
            f'<label for="{ident}-to">{escape(words["to"])}</label> '
            f'<input type="time" id="{ident}-to" name="to_{n}" value="{end}">\n</fieldset>\n'
        )
    paused = "" if member.paused_until is None else member.paused_until.isoformat()
    return (
        f'<form method="post" action="/setup/{escape(token)}">\n'
        f'<input type="hidden" name="form_token" value="{escape(issued)}">\n'
        f'<input type="hidden" name="citizen_id" value="{escape(view.circle.citizen.id)}">\n'
        f'<p>\n<label for="{prefix}-hours">{escape(words["hours"])}</label><br>\n'
        f'<input type="number" id="{prefix}-hours" name="hours_per_week" min="0" max="168" '
        f'step="0.5" inputmode="decimal" value="{hours}" aria-describedby="{prefix}-hours-hint">'
        f'\n<br><span id="{prefix}-hours-hint">{escape(words["empty_no_limit"])} '
        f"{escape(_source(view, 'capacity', words))}</span>\n</p>\n"
        f'<p>\n<label for="{prefix}-tasks">{escape(words["tasks"])}</label><br>\n'
        f'<input type="number" id="{prefix}-tasks" name="tasks_per_week" min="0" max="1000" '
        f'step="1" inputmode="numeric" value="{tasks}" aria-describedby="{prefix}-tasks-hint">'
        f'\n<br><span id="{prefix}-tasks-hint">{escape(words["empty_no_limit"])} '
        f"{escape(_source(view, 'capacity', words))}</span>\n</p>\n"
        f'<fieldset aria-describedby="{prefix}-when-hint">\n'
        f"<legend>{escape(words['when_l'])}</legend>\n"
        f'<p id="{prefix}-when-hint">{escape(words["when_hint"])} '
        f"{escape(_source(view, 'availability', words))}</p>\n{''.join(rows)}</fieldset>\n"
        f'<p>\n<label for="{prefix}-pause">{escape(words["pause"])}</label><br>\n'
        f'<input type="date" id="{prefix}-pause" name="paused_until" value="{paused}" '
        f'aria-describedby="{prefix}-pause-hint">\n<br><span id="{prefix}-pause-hint">'
        f"{escape(words['pause_hint'])} {escape(_source(view, 'paused_until', words))}</span>"
        "\n</p>\n"
        f'<button type="submit" name="action" value="capacity" class="primary">'
        f"{escape(words['save'])}</button>\n</form>\n"
    )


def _relief_form(
    view: CircleCareView, n_circle: int, language: str, token: str, issued: str
) -> str:
    words = _WORDS[language]
    prefix = f"c{n_circle}"
    zone = ZoneInfo(view.circle.citizen.timezone)
    items = []
    for request in view.relief:
        last = (request.end.astimezone(zone) - timedelta(microseconds=1)).date()
        first = request.start.astimezone(zone).date()
        items.append(
            f"<li>{first.isoformat()}\N{EN DASH}{last.isoformat()}: "
            f"{escape(words.get(request.status, request.status))}</li>"
        )
    listing = (
        f"<h3>{escape(words['relief_list'])}</h3>\n<ul>{''.join(items)}</ul>\n" if items else ""
    )
    return (
        f'<form method="post" action="/setup/{escape(token)}">\n'
        f'<input type="hidden" name="form_token" value="{escape(issued)}">\n'
        f'<input type="hidden" name="citizen_id" value="{escape(view.circle.citizen.id)}">\n'
        f'<p>\n<label for="{prefix}-relief-from">{escape(words["relief_from"])}</label><br>\n'
        f'<input type="date" id="{prefix}-relief-from" name="relief_from" required>\n</p>\n'
        f'<p>\n<label for="{prefix}-relief-to">{escape(words["relief_to"])}</label><br>\n'
        f'<input type="date" id="{prefix}-relief-to" name="relief_to" required>\n</p>\n'
        f'<button type="submit" name="action" value="relief">'
        f"{escape(words['relief_button'])}</button>\n</form>\n{listing}"
    )


def care_html(
    views: tuple[CircleCareView, ...],
    *,
    language: str,
    token: str,
    issued: str,
    notice: str | None = None,
    alert: str | None = None,
) -> str:
    """The capacity and relief sections of the setup page, one form of each per circle."""
    words = _WORDS[language]
    parts: list[str] = []
    if notice:
        parts.append(f'<p class="notice" role="status">{escape(notice)}</p>\n')
    if alert:
        parts.append(f'<p class="notice" role="alert">{escape(alert)}</p>\n')
    several = len(views) > 1
    parts.append(
        f'<section aria-labelledby="capacity">\n<h2 id="capacity">'
        f"{escape(words['capacity_h'])}</h2>\n<p>{escape(words['capacity_p'])}</p>\n"
    )
    for n, view in enumerate(views):
        if several:
            name = view.circle.citizen.display_name
            parts.append(f"<h3>{escape(words['for'].format(name=name))}</h3>\n")
        parts.append(f"<p>{escape(_load_text(view, language, words))}</p>\n")
        parts.append(_capacity_form(view, n, language, token, issued))
    parts.append("</section>\n")
    relievable = [(n, v) for n, v in enumerate(views) if v.member.role != "staff"]
    if not relievable:
        return "".join(parts)  # staff are relieved by their employer
    parts.append(
        f'<section aria-labelledby="relief">\n<h2 id="relief">{escape(words["relief_h"])}</h2>\n'
        f"<p>{escape(words['relief_p'])}</p>\n"
    )
    for n, view in relievable:
        if several:
            name = view.circle.citizen.display_name
            parts.append(f"<h3>{escape(words['for'].format(name=name))}</h3>\n")
        parts.append(_relief_form(view, n, language, token, issued))
    parts.append("</section>\n")
    return "".join(parts)


# --- the page and its actions ----------------------------------------------------------------


async def care_page(
    request: Request,
    page: SetupPage,
    token: str,
    *,
    now: datetime,
    headers: dict[str, str],
    notice: str | None = None,
    alert: str | None = None,
    status: int = 200,
) -> Response:
    """The whole setup page with the care sections (and a notice after an action)."""
    store = state_of(request)["store"]
    issued = form_token(page.link, token, issued=now)
    views = await open_member_care(store, page.link, now=now)
    language = language_of(page.member.locale)
    extra = care_html(
        views, language=language, token=token, issued=issued, notice=notice, alert=alert
    )
    html = setup_page_html(page, form_token=issued, token=token, extra=extra)
    return HTMLResponse(html, status, headers=headers)


async def care_action(
    request: Request,
    page: SetupPage,
    form: dict[str, list[str]],
    token: str,
    *,
    now: datetime,
    headers: dict[str, str],
) -> Response | None:
    """Do a `capacity` or `relief` POST; None when the form token does not hold (the caller
    refuses it as any other forged POST)."""
    if not check_form_token(page.link, token, first_value(form, "form_token"), now=now):
        return None
    store = state_of(request)["store"]
    language = language_of(page.member.locale)
    words = _WORDS[language]
    citizen_id = first_value(form, "citizen_id")
    circle = next((c for c in page.circles if c.citizen.id == citizen_id), None)

    def problem(keys: list[str]) -> str:
        return words["error"].format(fields="; ".join(words[k] for k in keys))

    if circle is None:
        return await care_page(
            request, page, token, now=now, headers=headers, alert=problem(["bad_circle"]),
            status=422,
        )  # fmt: skip
    if first_value(form, "action") == "capacity":
        values = parse_capacity_form(form)
        if isinstance(values, list):
            return await care_page(
                request, page, token, now=now, headers=headers, alert=problem(values), status=422
            )
        if not await save_capacity(store, page.link, citizen_id, values, now=now):
            return await care_page(
                request, page, token, now=now, headers=headers, alert=problem(["bad_circle"]),
                status=422,
            )  # fmt: skip
        notice = words["saved"]
        return await care_page(request, page, token, now=now, headers=headers, notice=notice)
    zone = ZoneInfo(circle.citizen.timezone)
    try:
        first = date.fromisoformat(first_value(form, "relief_from"))
        last = date.fromisoformat(first_value(form, "relief_to"))
        if not MIN_YEAR <= first.year <= last.year <= MAX_YEAR:
            raise ValueError("out of range")
    except ValueError:
        return await care_page(
            request, page, token, now=now, headers=headers, alert=problem(["bad_period"]),
            status=422,
        )  # fmt: skip
    start = datetime.combine(first, time(0), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone)
    outcome = await ask_relief(store, page.link, citizen_id, start, end, now=now)
    if not isinstance(outcome, ReliefOutcome):
        key = _REFUSED.get(outcome, "bad_circle")
        return await care_page(
            request, page, token, now=now, headers=headers, alert=problem([key]), status=422
        )
    notice = words["relief_done"].format(n=len(outcome.released))
    return await care_page(request, page, token, now=now, headers=headers, notice=notice)

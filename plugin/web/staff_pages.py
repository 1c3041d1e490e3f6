"""The HTML of the staff dashboard, in Danish and English.

Same rules as the members' pages (`link_pages`): plain server-rendered HTML5, no JavaScript,
nothing loaded from elsewhere (one inline style sheet allowed by its hash in the
Content-Security-Policy; the load chart is inline SVG), every value from the host escaped.
Accessible: a `lang` attribute, one `h1` and an `h2` per section, tables with a `caption`,
column headers with `scope="col"` and each row's time as a row header (`scope="row"`),
labelled form fields, a `role="alert"` message after a failed login, text colours of at least
4.5:1 in light and dark themes, and a visible keyboard focus.

Shown of members: the names the host gave and their role; never e-mail, phone or any id of
the citizen beyond the host's opaque one in the address.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from plugin.domain.fairness import Load
from plugin.domain.model import CATEGORY_LABELS, Citizen, ReliefRequest
from plugin.domain.staffing import Risk
from plugin.services.dashboard import DashboardData, MemberLoad, Slot
from plugin.web.body import page_csp
from plugin.web.load_chart import hours_text, load_chart_svg

__all__ = [
    "STAFF_CSP",
    "circle_page_html",
    "index_page_html",
    "login_page_html",
    "message_page_html",
]

_STYLE = """
:root { color-scheme: light dark; --fg: #111; --bg: #fff; --accent: #0b5394; --muted: #444;
  --line: #8a8a8a; --head: #eef2f7; --danger: #a4161a; --warn: #7a4100; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #f2f2f2; --bg: #121212; --accent: #8cc4ff; --muted: #c8c8c8;
    --line: #6f6f6f; --head: #1f2833; --danger: #ff8a8a; --warn: #ffc27a; }
}
body { margin: 0; font: 1rem/1.5 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
main { max-width: 62rem; margin: 0 auto; padding: 1rem 1rem 3rem; }
nav { display: flex; flex-wrap: wrap; gap: 0.5rem 1.5rem; align-items: center;
  justify-content: flex-end; }
nav form { margin: 0; }
h1 { font-size: 1.75rem; margin: 0.5rem 0 0.25rem; }
h2 { font-size: 1.3rem; margin: 2rem 0 0.5rem; }
.muted { color: var(--muted); margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: 0.5rem 0 1rem; }
caption { text-align: left; font-weight: 600; padding: 0.25rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: 0.4rem 0.5rem; text-align: left;
  vertical-align: top; }
thead th { background: var(--head); }
tbody th { font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.danger { color: var(--danger); font-weight: 700; }
.warn { color: var(--warn); font-weight: 700; }
.notice { border-left: 0.35rem solid var(--danger); padding: 0.5rem 0.75rem; font-weight: 600; }
figure { margin: 0.5rem 0 1rem; }
figure svg { background: #fff; max-width: 44rem; display: block; }
figcaption { color: var(--muted); }
label { display: block; font-weight: 600; margin-top: 1rem; }
input { font: inherit; padding: 0.4rem; width: 100%; max-width: 22rem; box-sizing: border-box;
  border: 2px solid var(--line); border-radius: 0.3rem; color: var(--fg); background: var(--bg); }
button { font: inherit; min-height: 2.75rem; padding: 0.5rem 1.25rem; margin-top: 1rem;
  border: 2px solid var(--accent); border-radius: 0.4rem; cursor: pointer;
  background: var(--accent); color: var(--bg); }
main > form > button { display: block; }
nav button { margin: 0; background: var(--bg); color: var(--accent); min-height: 2.25rem;
  padding: 0.25rem 0.75rem; }
ul.circles { padding-left: 1.25rem; }
ul.circles li { margin: 0.35rem 0; }
a { color: var(--accent); }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 3px; }
"""
STAFF_CSP = page_csp(_STYLE)

_WORDS: dict[str, dict[str, str]] = {
    "da": {
        "product": "Personaleoversigt",
        "login_title": "Log ind som personale",
        "login_intro": "Log ind med kommunens id og personalets adgangskode.",
        "tenant": "Kommunens id",
        "password": "Adgangskode",
        "sign_in": "Log ind",
        "wrong": "Forkert kommune-id eller adgangskode.",
        "sign_out": "Log ud",
        "other_language": "English",
        "circles": "Borgere",
        "no_circles": "Der er ingen borgere endnu.",
        "all_circles": "Alle borgere",
        "care": "omsorg",
        "as_of": "Opdateret {when}.",
        "attention_h": "Mangler folk",
        "attention_caption": "Ikke besat eller i fare: ledige pladser tæt på eller efter fristen",
        "attention_none": "Alt er besat eller har god tid.",
        "deadline": "Frist",
        "free": "Ledige pladser",
        "unfilled": "Ikke besat \N{EN DASH} fristen er overskredet",
        "at_risk": "I fare \N{EN DASH} fristen er snart",
        "load_h": "Belastning",
        "load_caption": "Timer og opgaver i denne og de tre næste uger og i de fire uger før, "
        "mod kapacitet for fire uger",
        "load_intro": "Belastningen måles over denne og de tre næste uger, {start}\N{EN DASH}"
        "{end}, som når kommunen får besked om overbelastning.",
        "load_figure": "Timer pr. medlem mod kapaciteten; tallene står også i tabellen nedenfor.",
        "member": "Medlem",
        "role": "Rolle",
        "past": "4 uger før",
        "coming": "Denne og 3 næste uger",
        "capacity": "Kapacitet (4 uger)",
        "state": "Vurdering",
        "over": "Over kapacitet",
        "within": "Inden for kapacitet",
        "no_capacity": "ikke angivet",
        "hours_tasks": "{hours} t, {tasks} opg.",
        "hours_task": "{hours} t, {tasks} opg.",
        "relief_h": "Anmodninger om aflastning",
        "relief_caption": "Åbne anmodninger om aflastning",
        "relief_none": "Ingen åbne anmodninger.",
        "from": "Fra",
        "to": "Til",
        "status": "Status",
        "requested": "Afventer kommunen",
        "coming_h": "De kommende fire uger",
        "coming_caption": "Opgaver og besøg de kommende fire uger, og hvem der har dem",
        "coming_none": "Ingen opgaver de kommende fire uger.",
        "when": "Hvornår",
        "what": "Hvad",
        "who": "Hvem",
        "filled": "Besat",
        "open": "Mangler {n}",
        "cancelled": "Aflyst",
        "asked": "Spurgt: {names}",
        "nobody": "Ingen endnu",
        "visit": "besøg",
        "relative": "Pårørende",
        "network": "Netværk",
        "staff": "Personale",
        "not_found": "Ikke fundet",
        "not_found_text": "Denne borger findes ikke hos jeres kommune.",
        "refused": "Afvist",
        "refused_text": "Adgang kræver personalets login eller kommunens API-nøgle.",
        "busy": "For mange forsøg",
        "busy_text": "Vent lidt, og prøv så igen.",
        "bad_request": "Handlingen blev afvist",
        "bad_request_text": "Åbn siden igen, og prøv en gang til.",
    },
    "en": {
        "product": "Staff dashboard",
        "login_title": "Staff sign-in",
        "login_intro": "Sign in with the municipality's id and the staff password.",
        "tenant": "Municipality id",
        "password": "Password",
        "sign_in": "Sign in",
        "wrong": "Wrong municipality id or password.",
        "sign_out": "Sign out",
        "other_language": "Dansk",
        "circles": "Citizens",
        "no_circles": "There are no citizens yet.",
        "all_circles": "All citizens",
        "care": "care",
        "as_of": "As of {when}.",
        "attention_h": "Needs people",
        "attention_caption": "Unfilled or at risk: free places close to or past the deadline",
        "attention_none": "Everything is filled or has time.",
        "deadline": "Deadline",
        "free": "Free places",
        "unfilled": "Unfilled \N{EN DASH} deadline passed",
        "at_risk": "At risk \N{EN DASH} deadline soon",
        "load_h": "Load",
        "load_caption": "Hours and tasks this week and the next three, and in the four weeks "
        "before, against four weeks of capacity",
        "load_intro": "Load is measured over this week and the next three, {start}\N{EN DASH}"
        "{end}, as when the municipality is told of an overload.",
        "load_figure": "Hours per member against capacity; the numbers are also in the table "
        "below.",
        "member": "Member",
        "role": "Role",
        "past": "4 weeks before",
        "coming": "This and next 3 weeks",
        "capacity": "Capacity (4 weeks)",
        "state": "Assessment",
        "over": "Over capacity",
        "within": "Within capacity",
        "no_capacity": "not given",
        "hours_tasks": "{hours} h, {tasks} tasks",
        "hours_task": "{hours} h, {tasks} task",
        "relief_h": "Relief requests",
        "relief_caption": "Open relief requests",
        "relief_none": "No open requests.",
        "from": "From",
        "to": "To",
        "status": "Status",
        "requested": "Awaiting the municipality",
        "coming_h": "The coming four weeks",
        "coming_caption": "Tasks and visits in the coming four weeks, and who holds them",
        "coming_none": "No tasks in the coming four weeks.",
        "when": "When",
        "what": "What",
        "who": "Who",
        "filled": "Filled",
        "open": "{n} needed",
        "cancelled": "Cancelled",
        "asked": "Asked: {names}",
        "nobody": "Nobody yet",
        "visit": "visit",
        "relative": "Relative",
        "network": "Network",
        "staff": "Staff",
        "not_found": "Not found",
        "not_found_text": "Your municipality has no such citizen.",
        "refused": "Refused",
        "refused_text": "Access needs the staff sign-in or the municipality's API token.",
        "busy": "Too many attempts",
        "busy_text": "Please wait a moment and try again.",
        "bad_request": "Request refused",
        "bad_request_text": "Open the page again and try once more.",
    },
}

_WEEKDAYS = {
    "da": ("man.", "tirs.", "ons.", "tors.", "fre.", "lør.", "søn."),
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
}
_MONTHS = {
    "da": ("jan.", "feb.", "mar.", "apr.", "maj", "jun.", "jul.", "aug.", "sep.", "okt.",
           "nov.", "dec."),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}  # fmt: skip


def _clock(moment: datetime, language: str) -> str:
    return moment.strftime("%H.%M" if language == "da" else "%H:%M")


def _day(moment: datetime, language: str) -> str:
    weekday = _WEEKDAYS[language][moment.weekday()]
    month = _MONTHS[language][moment.month - 1]
    if language == "da":
        return f"{weekday} {moment.day}. {month}"
    return f"{weekday} {moment.day} {month}"


def _moment(moment: datetime, language: str) -> str:
    return (
        f'<time datetime="{moment.isoformat()}">'
        f"{escape(_day(moment, language))} {_clock(moment, language)}</time>"
    )


def _span(start: datetime, end: datetime, language: str) -> str:
    to = (
        _clock(end, language)
        if start.date() == end.date()
        else f"{_day(end, language)} {_clock(end, language)}"
    )
    return (
        f'<time datetime="{start.isoformat()}">{escape(_day(start, language))} '
        f"{_clock(start, language)}\N{EN DASH}{escape(to)}</time>"
    )


def _with_lang(path: str, lang: str | None) -> str:
    if not lang:
        return path
    return f"{path}{'&' if '?' in path else '?'}{urlencode({'lang': lang})}"


def _nav(
    language: str, *, lang_param: str | None, here: str, logout_token: str | None, back: bool
) -> str:
    words = _WORDS[language]
    other = "en" if language == "da" else "da"
    parts = ["<nav>"]
    if back:
        parts.append(
            f'<a href="{escape(_with_lang("/staff/", lang_param))}">'
            f"{escape(words['all_circles'])}</a>"
        )
    parts.append(
        f'<a href="{escape(_with_lang(here, other))}" lang="{other}" hreflang="{other}">'
        f"{escape(words['other_language'])}</a>"
    )
    if logout_token is not None:
        parts.append(
            '<form method="post" action="/staff/logout">'
            f'<input type="hidden" name="form_token" value="{escape(logout_token)}">'
            f'<button type="submit">{escape(words["sign_out"])}</button></form>'
        )
    parts.append("</nav>\n")
    return "".join(parts)


def _document(language: str, title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        f'<html lang="{language}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )


def login_page_html(
    language: str, *, tenant_id: str = "", failed: bool = False, next_path: str = ""
) -> str:
    words = _WORDS[language]
    here = f"/staff/login?{urlencode({'next': next_path})}" if next_path else "/staff/login"
    alert = f'<p class="notice" role="alert">{escape(words["wrong"])}</p>\n' if failed else ""
    body = (
        _nav(language, lang_param=None, here=here, logout_token=None, back=False)
        + f"<h1>{escape(words['login_title'])}</h1>\n{alert}"
        f"<p>{escape(words['login_intro'])}</p>\n"
        '<form method="post" action="/staff/login">\n'
        f'<input type="hidden" name="lang" value="{language}">\n'
        f'<input type="hidden" name="next" value="{escape(next_path)}">\n'
        f'<label for="tenant">{escape(words["tenant"])}</label>\n'
        f'<input id="tenant" name="tenant" autocomplete="organization" required '
        f'value="{escape(tenant_id)}">\n'
        f'<label for="password">{escape(words["password"])}</label>\n'
        '<input id="password" name="password" type="password" autocomplete="current-password" '
        "required>\n"
        f'<button type="submit">{escape(words["sign_in"])}</button>\n</form>\n'
    )
    return _document(language, words["login_title"], body)


def message_page_html(kind: str, language: str) -> str:
    """`kind`: not_found, refused, busy or bad_request."""
    words = _WORDS[language]
    body = f"<h1>{escape(words[kind])}</h1>\n<p>{escape(words[kind + '_text'])}</p>\n"
    return _document(language, words[kind], body)


def index_page_html(
    citizens: Sequence[Citizen],
    language: str,
    *,
    lang_param: str | None,
    logout_token: str | None,
) -> str:
    words = _WORDS[language]
    parts = [
        _nav(language, lang_param=lang_param, here="/staff/", logout_token=logout_token,
             back=False),
        f"<h1>{escape(words['product'])}</h1>\n",
        f'<section aria-labelledby="circles">\n<h2 id="circles">{escape(words["circles"])}</h2>\n',
    ]  # fmt: skip
    if not citizens:
        parts.append(f"<p>{escape(words['no_circles'])}</p>\n")
    else:
        parts.append('<ul class="circles">\n')
        for citizen in citizens:
            href = _with_lang(f"/staff/circles/{quote(citizen.id, safe='')}", lang_param)
            name = f"{citizen.display_name} \N{EN DASH} {words['care']}"
            parts.append(f'<li><a href="{escape(href)}">{escape(name)}</a></li>\n')
        parts.append("</ul>\n")
    parts.append("</section>\n")
    return _document(language, words["product"], "".join(parts))


def _category(slot: Slot, language: str) -> str:
    key = slot.task.category if slot.task.category in CATEGORY_LABELS else "other"
    return CATEGORY_LABELS[key][language]


def _status(slot: Slot, words: dict[str, str]) -> str:
    if slot.cancelled:
        return escape(words["cancelled"])
    if slot.free_slots == 0:
        text = escape(words["filled"])
    else:
        text = escape(words["open"].format(n=slot.free_slots))
    if slot.risk is Risk.UNFILLED:
        text += f'<br><span class="danger">{escape(words["unfilled"])}</span>'
    elif slot.risk is Risk.AT_RISK:
        text += f'<br><span class="warn">{escape(words["at_risk"])}</span>'
    if slot.asked and not slot.cancelled and slot.free_slots:
        text += "<br>" + escape(words["asked"].format(names=", ".join(slot.asked)))
    return text


def _coming_table(data: DashboardData, language: str, zone: ZoneInfo) -> str:
    words = _WORDS[language]
    if not data.coming:
        return f"<p>{escape(words['coming_none'])}</p>\n"
    rows = []
    for slot in data.coming:
        occurrence = slot.record.occurrence
        start, end = occurrence.start.astimezone(zone), occurrence.end.astimezone(zone)
        who = ", ".join(slot.holders) if slot.holders else words["nobody"]
        what = _category(slot, language)
        rows.append(
            f'<tr><th scope="row">{_span(start, end, language)}</th>'
            f"<td>{escape(what)}</td><td>{escape(who)}</td>"
            f"<td>{_status(slot, words)}</td></tr>\n"
        )
    return (
        f"<table>\n<caption>{escape(words['coming_caption'])}</caption>\n<thead><tr>"
        f'<th scope="col">{escape(words["when"])}</th><th scope="col">{escape(words["what"])}</th>'
        f'<th scope="col">{escape(words["who"])}</th>'
        f'<th scope="col">{escape(words["status"])}</th></tr></thead>\n'
        f"<tbody>\n{''.join(rows)}</tbody>\n</table>\n"
    )


def _attention_table(data: DashboardData, language: str, zone: ZoneInfo) -> str:
    words = _WORDS[language]
    if not data.attention:
        return f"<p>{escape(words['attention_none'])}</p>\n"
    rows = []
    for slot in data.attention:
        occurrence = slot.record.occurrence
        start, end = occurrence.start.astimezone(zone), occurrence.end.astimezone(zone)
        risk = (
            f'<span class="danger">{escape(words["unfilled"])}</span>'
            if slot.risk is Risk.UNFILLED
            else f'<span class="warn">{escape(words["at_risk"])}</span>'
        )
        if slot.asked:
            risk += "<br>" + escape(words["asked"].format(names=", ".join(slot.asked)))
        rows.append(
            f'<tr><th scope="row">{_span(start, end, language)}</th>'
            f"<td>{escape(_category(slot, language))}</td>"
            f'<td class="num">{slot.free_slots}</td>'
            f"<td>{_moment(slot.due.astimezone(zone), language)}</td><td>{risk}</td></tr>\n"
        )
    return (
        f"<table>\n<caption>{escape(words['attention_caption'])}</caption>\n<thead><tr>"
        f'<th scope="col">{escape(words["when"])}</th><th scope="col">{escape(words["what"])}</th>'
        f'<th scope="col">{escape(words["free"])}</th>'
        f'<th scope="col">{escape(words["deadline"])}</th>'
        f'<th scope="col">{escape(words["status"])}</th></tr></thead>\n'
        f"<tbody>\n{''.join(rows)}</tbody>\n</table>\n"
    )


def _load_cell(load: Load, words: dict[str, str], language: str) -> str:
    hours = hours_text(load.hours, language)
    phrase = words["hours_task" if load.tasks == 1 else "hours_tasks"]
    return escape(phrase.format(hours=hours, tasks=load.tasks))


def _capacity(load: MemberLoad, words: dict[str, str], language: str) -> str:
    parts = []
    if load.capacity_hours is not None:
        unit = "t" if language == "da" else "h"
        parts.append(f"{hours_text(load.capacity_hours, language)} {unit}")
    if load.capacity_tasks is not None:
        tasks = "opg." if language == "da" else "task" if load.capacity_tasks == 1 else "tasks"
        parts.append(f"{load.capacity_tasks} {tasks}")
    return escape(", ".join(parts) if parts else words["no_capacity"])


def _load_section(data: DashboardData, language: str) -> str:
    words = _WORDS[language]
    rows = []
    for load in data.loads:
        if load.capacity_hours is None and load.capacity_tasks is None:
            state = escape(words["no_capacity"])
        elif load.over:
            state = f'<span class="danger">{escape(words["over"])}</span>'
        else:
            state = escape(words["within"])
        rows.append(
            f'<tr><th scope="row">{escape(load.member.name)}</th>'
            f"<td>{escape(words[load.member.role])}</td>"
            f'<td class="num">{_load_cell(load.previous, words, language)}</td>'
            f'<td class="num">{_load_cell(load.current, words, language)}</td>'
            f'<td class="num">{_capacity(load, words, language)}</td><td>{state}</td></tr>\n'
        )
    zone = ZoneInfo(data.circle.citizen.timezone)
    start = data.window.start.astimezone(zone)
    last = (data.window.end - timedelta(days=1)).astimezone(zone)
    intro = words["load_intro"].format(start=_day(start, language), end=_day(last, language))
    return (
        f"<p>{escape(intro)}</p>\n"
        f'<figure aria-describedby="load-figcaption">\n{load_chart_svg(data.loads, language)}\n'
        f'<figcaption id="load-figcaption">{escape(words["load_figure"])}</figcaption>\n'
        "</figure>\n"
        f"<table>\n<caption>{escape(words['load_caption'])}</caption>\n<thead><tr>"
        f'<th scope="col">{escape(words["member"])}</th>'
        f'<th scope="col">{escape(words["role"])}</th>'
        f'<th scope="col">{escape(words["past"])}</th>'
        f'<th scope="col">{escape(words["coming"])}</th>'
        f'<th scope="col">{escape(words["capacity"])}</th>'
        f'<th scope="col">{escape(words["state"])}</th></tr></thead>\n'
        f"<tbody>\n{''.join(rows)}</tbody>\n</table>\n"
    )


def _relief_section(
    relief: Sequence[ReliefRequest], names: dict[str, str], language: str, zone: ZoneInfo
) -> str:
    words = _WORDS[language]
    if not relief:
        return f"<p>{escape(words['relief_none'])}</p>\n"
    rows = "".join(
        f'<tr><th scope="row">{escape(names.get(r.member_id, r.member_id))}</th>'
        f"<td>{_moment(r.start.astimezone(zone), language)}</td>"
        f"<td>{_moment(r.end.astimezone(zone), language)}</td>"
        f"<td>{escape(words['requested'])}</td></tr>\n"
        for r in relief
    )
    return (
        f"<table>\n<caption>{escape(words['relief_caption'])}</caption>\n<thead><tr>"
        f'<th scope="col">{escape(words["member"])}</th>'
        f'<th scope="col">{escape(words["from"])}</th>'
        f'<th scope="col">{escape(words["to"])}</th>'
        f'<th scope="col">{escape(words["status"])}</th></tr></thead>\n'
        f"<tbody>\n{rows}</tbody>\n</table>\n"
    )


def circle_page_html(
    data: DashboardData,
    language: str,
    *,
    lang_param: str | None,
    logout_token: str | None,
) -> str:
    words = _WORDS[language]
    citizen = data.circle.citizen
    zone = ZoneInfo(citizen.timezone)
    title = f"{citizen.display_name} \N{EN DASH} {words['care']}"
    here = f"/staff/circles/{quote(citizen.id, safe='')}"
    names = {m.id: m.name for m in data.circle.members}
    sections = [
        ("attention", words["attention_h"], _attention_table(data, language, zone)),
        ("load", words["load_h"], _load_section(data, language)),
        ("relief", words["relief_h"], _relief_section(data.relief, names, language, zone)),
        ("coming", words["coming_h"], _coming_table(data, language, zone)),
    ]
    body = [
        _nav(language, lang_param=lang_param, here=here, logout_token=logout_token, back=True),
        f"<h1>{escape(title)}</h1>\n",
        '<p class="muted">'
        + words["as_of"].format(when=_moment(data.now.astimezone(zone), language))
        + "</p>\n",
    ]
    for key, heading, content in sections:
        body.append(
            f'<section aria-labelledby="{key}">\n<h2 id="{key}">{escape(heading)}</h2>\n'
            f"{content}</section>\n"
        )
    return _document(language, f"{title} \N{EN DASH} {words['product']}", "".join(body))

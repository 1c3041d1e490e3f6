"""The HTML of the claim page and its error pages, in Danish and English.

Plain server-rendered HTML5 that needs no JavaScript and loads nothing from elsewhere: one
inline style sheet (allowed by its hash in the Content-Security-Policy), a `lang` attribute,
headings, a description list, one form whose buttons carry their own visible labels inside a
labelled fieldset, a `role="status"` notice after an action, and a clear `:focus-visible`
outline. Every value from the host is escaped.

What the page shows follows DESIGN.md principle 5: the neutral category title, the time, the
member's own relation, other holders by the name the host gave them (never their contact
data), and details and place only at `full` visibility.
"""

from __future__ import annotations

from datetime import date, datetime
from html import escape
from zoneinfo import ZoneInfo

from plugin.domain.circle import can_see_details
from plugin.domain.claims import ClaimOutcome
from plugin.domain.model import CATEGORY_LABELS
from plugin.services.claim_links import ClaimPage
from plugin.services.claiming import Ask
from plugin.services.links import Refusal
from plugin.sync.render import Relation
from plugin.web.body import page_csp

__all__ = [
    "CSP",
    "LANGUAGES",
    "claim_page_html",
    "document",
    "language_of",
    "message_page_html",
    "when_text",
]

LANGUAGES = ("da", "en")

_STYLE = """
:root { color-scheme: light dark; --fg: #111; --bg: #fff; --accent: #0b5394; --muted: #444; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #f2f2f2; --bg: #121212; --accent: #8cc4ff; --muted: #c8c8c8; }
}
body { margin: 0; font: 1.125rem/1.5 system-ui, sans-serif;
  color: var(--fg); background: var(--bg); }
main { max-width: 40rem; margin: 0 auto; padding: 1.5rem 1rem 3rem; }
h1 { font-size: 1.75rem; margin: 0.25rem 0 1rem; }
.circle { color: var(--muted); margin: 0; }
.notice { border-left: 0.35rem solid var(--accent); padding: 0.5rem 0.75rem; font-weight: 600; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.35rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; white-space: pre-line; }
fieldset { border: 0; padding: 0; margin: 1.5rem 0 0; }
legend { font-weight: 600; margin-bottom: 0.5rem; }
button { font: inherit; min-height: 2.75rem; padding: 0.5rem 1.25rem; margin: 0 0.5rem 0.5rem 0;
  border: 2px solid var(--accent); border-radius: 0.4rem; cursor: pointer;
  background: var(--bg); color: var(--accent); }
button.primary { background: var(--accent); color: var(--bg); }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 3px; }
section { margin-top: 2rem; }
h2 { font-size: 1.3rem; margin-bottom: 0.5rem; }
code { font-size: 1rem; overflow-wrap: anywhere; }
figure { margin: 1rem 0; }
figure svg { background: #fff; }
a { color: var(--accent); }
"""
_PRIMARY = ' class="primary"'
CSP = page_csp(_STYLE)

_WORDS: dict[str, dict[str, str]] = {
    "da": {
        "care": "omsorg",
        "when": "Hvornår",
        "status": "Status",
        "place": "Sted",
        "details": "Detaljer",
        "what": "Hvad vil du?",
        "open_one": "Ledig \N{EN DASH} der mangler én.",
        "open_many": "Ledig \N{EN DASH} der mangler {n}.",
        "holds": "Du har taget opgaven.",
        "taken": "Taget af {names}.",
        "unassigned": "Ikke tildelt.",
        "cancelled": "Aflyst.",
        "passed": "Du har sagt nej tak til denne.",
        "someone": "en anden",
        "and": "og",
        "claim": "Tag opgaven",
        "release": "Giv opgaven fra mig",
        "pass": "Nej tak",
        "at": "kl.",
    },
    "en": {
        "care": "care",
        "when": "When",
        "status": "Status",
        "place": "Place",
        "details": "Details",
        "what": "What would you like to do?",
        "open_one": "Open \N{EN DASH} one more person needed.",
        "open_many": "Open \N{EN DASH} {n} more people needed.",
        "holds": "You have claimed this task.",
        "taken": "Taken by {names}.",
        "unassigned": "Unassigned.",
        "cancelled": "Cancelled.",
        "passed": "You have passed on this one.",
        "someone": "someone else",
        "and": "and",
        "claim": "Claim",
        "release": "Release",
        "pass": "Pass",
        "at": "",
    },
}

_OUTCOMES: dict[str, dict[ClaimOutcome | None, str]] = {
    "da": {
        ClaimOutcome.CLAIMED: "Tak! Opgaven er din.",
        ClaimOutcome.ALREADY_HELD: "Du har allerede taget opgaven.",
        ClaimOutcome.FULL: "Desværre \N{EN DASH} en anden nåede at tage den sidste plads.",
        ClaimOutcome.CANCELLED: "Opgaven er aflyst.",
        ClaimOutcome.RELEASED: "Du har givet opgaven fra dig. Den bliver tilbudt igen.",
        ClaimOutcome.NOT_HELD: "Du havde ikke opgaven.",
        ClaimOutcome.PASSED: "Noteret: ikke dig denne gang.",
        ClaimOutcome.ALREADY_PASSED: "Du har allerede sagt nej tak.",
        None: "Denne opgave kan du ikke tage.",
    },
    "en": {
        ClaimOutcome.CLAIMED: "Thank you! The task is yours.",
        ClaimOutcome.ALREADY_HELD: "You already have this task.",
        ClaimOutcome.FULL: "Sorry \N{EN DASH} someone else took the last place.",
        ClaimOutcome.CANCELLED: "This task has been cancelled.",
        ClaimOutcome.RELEASED: "You have released the task. It is offered again.",
        ClaimOutcome.NOT_HELD: "You did not have this task.",
        ClaimOutcome.PASSED: "Noted: not you this time.",
        ClaimOutcome.ALREADY_PASSED: "You had already passed.",
        None: "You cannot claim this task.",
    },
}

# (title, text) of the pages that are not a claim page.
MESSAGES: dict[str, dict[str, tuple[str, str]]] = {
    "da": {
        Refusal.UNKNOWN: ("Linket findes ikke", "Tjek, at hele linket kom med."),
        Refusal.REVOKED: (
            "Linket virker ikke længere",
            "Linket er trukket tilbage. Brug linket i din kalender, eller spørg kommunen "
            "om et nyt.",
        ),
        Refusal.REMOVED: (
            "Linket virker ikke længere",
            "Du er ikke længere med i denne kalender.",
        ),
        Refusal.OVER: ("Opgaven er overstået", "Den kan ikke længere tages eller gives fra sig."),
        "refused": ("Handlingen blev afvist", "Åbn linket igen, og prøv en gang til."),
        "busy": ("For mange forsøg", "Vent lidt, og prøv så igen."),
    },
    "en": {
        Refusal.UNKNOWN: ("Link not found", "Check that the whole link was copied."),
        Refusal.REVOKED: (
            "This link no longer works",
            "The link has been withdrawn. Use the link in your calendar, or ask the "
            "municipality for a new one.",
        ),
        Refusal.REMOVED: (
            "This link no longer works",
            "You are no longer part of this calendar.",
        ),
        Refusal.OVER: ("This task is over", "It can no longer be claimed or released."),
        "refused": ("Request refused", "Open the link again and try once more."),
        "busy": ("Too many requests", "Please wait a moment and try again."),
    },
}

_WEEKDAYS = {
    "da": ("mandag", "tirsdag", "onsdag", "torsdag", "fredag", "lørdag", "søndag"),
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
}
_MONTHS = {
    "da": ("januar", "februar", "marts", "april", "maj", "juni", "juli", "august",
           "september", "oktober", "november", "december"),
    "en": ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"),
}  # fmt: skip


def language_of(locale: str | None) -> str:
    """ "da", "da-DK", "en_GB" … → "da" or "en"; anything else → "da" (the default)."""
    language = (locale or "").split("-")[0].split("_")[0].lower()
    return language if language in LANGUAGES else "da"


def day_text(moment: date, language: str) -> str:
    """`day_text(date(2026, 11, 30), "da")` is "30. november 2026" ("30 November 2026")."""
    month = _MONTHS[language][moment.month - 1]
    if language == "da":
        return f"{moment.day}. {month} {moment.year}"
    return f"{moment.day} {month} {moment.year}"


def _date(moment: datetime, language: str) -> str:
    weekday = _WEEKDAYS[language][moment.weekday()]
    month = _MONTHS[language][moment.month - 1]
    if language == "da":
        return f"{weekday} den {moment.day}. {month} {moment.year}"
    return f"{weekday} {moment.day} {month} {moment.year}"


def _clock(moment: datetime, language: str) -> str:
    return moment.strftime("%H.%M" if language == "da" else "%H:%M")


def when_text(start: datetime, end: datetime, language: str) -> str:
    """`when_text(<Tue 16 March 2027 10:00>, <11:00>, "da")` is
    "tirsdag den 16. marts 2027, kl. 10.00\N{EN DASH}11.00"."""
    at = _WORDS[language]["at"]
    prefix = f"{at} " if at else ""
    if start.date() == end.date():
        span = f"{_clock(start, language)}\N{EN DASH}{_clock(end, language)}"
        return f"{_date(start, language)}, {prefix}{span}"
    return (
        f"{_date(start, language)}, {prefix}{_clock(start, language)} \N{EN DASH} "
        f"{_date(end, language)}, {prefix}{_clock(end, language)}"
    )


def _status(page: ClaimPage, words: dict[str, str]) -> str:
    match page.relation:
        case Relation.CANCELLED:
            return words["cancelled"]
        case Relation.HOLDS:
            return words["holds"]
        case Relation.OFFERED:
            free = page.record.free_slots
            return words["open_one"] if free == 1 else words["open_many"].format(n=free)
        case Relation.TAKEN:
            names = [name or words["someone"] for name in page.holder_names]
            if not names:
                return words["unassigned"]
            joined = (
                names[0]
                if len(names) == 1
                else f"{', '.join(names[:-1])} {words['and']} {names[-1]}"
            )
            return words["taken"].format(names=joined)


def document(language: str, title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        f'<html lang="{language}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )


def claim_page_html(
    page: ClaimPage,
    *,
    asks: tuple[Ask, ...],
    form_token: str,
    outcome: ClaimOutcome | None = None,
    acted: bool = False,
) -> str:
    """The page for one occurrence; after an action (`acted`), `outcome` is announced on top
    (None then means the member may not claim it)."""
    language = language_of(page.member.locale)
    words = _WORDS[language]
    category = page.task.category if page.task.category in CATEGORY_LABELS else "other"
    title = CATEGORY_LABELS[category][language]
    circle = f"{page.circle.citizen.display_name} \N{EN DASH} {words['care']}"
    zone = ZoneInfo(page.task.timezone)
    start = page.record.occurrence.start.astimezone(zone)
    end = page.record.occurrence.end.astimezone(zone)
    parts = [f'<p class="circle">{escape(circle)}</p>\n<h1>{escape(title)}</h1>\n']
    if acted:
        notice = _OUTCOMES[language][outcome]
        parts.append(f'<p class="notice" role="status">{escape(notice)}</p>\n')
    rows = [
        (words["when"], f'<time datetime="{start.isoformat()}">'
                        f"{escape(when_text(start, end, language))}</time>"),
        (words["status"], escape(_status(page, words))),
    ]  # fmt: skip
    if can_see_details(page.member):
        if page.task.location:
            rows.append((words["place"], escape(page.task.location.strip())))
        if page.task.details:
            rows.append((words["details"], escape(page.task.details.strip())))
    parts.append("<dl>\n")
    for label, value in rows:
        parts.append(f"<dt>{escape(label)}</dt><dd>{value}</dd>\n")
    parts.append("</dl>\n")
    if page.passed and page.relation is not Relation.HOLDS:
        parts.append(f"<p>{escape(words['passed'])}</p>\n")
    if asks:
        buttons = "".join(
            f'<button type="submit" name="action" value="{ask.value}"'
            f"{_PRIMARY if ask is Ask.CLAIM else ''}>{escape(words[ask.value])}</button>\n"
            for ask in asks
        )
        parts.append(
            f'<form method="post" action="/c/{escape(page.token)}">\n'
            f'<input type="hidden" name="form_token" value="{escape(form_token)}">\n'
            f"<fieldset>\n<legend>{escape(words['what'])}</legend>\n{buttons}</fieldset>\n"
            "</form>\n"
        )
    return document(language, f"{title} \N{EN DASH} {circle}", "".join(parts))


def message_page_html(kind: str, language: str) -> str:
    """A page that only says something: a Refusal's value, "refused" or "busy"."""
    title, text = MESSAGES[language][kind]
    body = f"<h1>{escape(title)}</h1>\n<p>{escape(text)}</p>\n"
    return document(language, title, body)

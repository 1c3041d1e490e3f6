"""The HTML of the setup page and of the one-time "new device" page, in Danish and English.

Same rules as the claim page (`link_pages`): no JavaScript, nothing from elsewhere (the QR
code is inline SVG), escaped values, the shared style sheet.
"""

from __future__ import annotations

import io
from html import escape

import segno

from plugin.services.setup import CalDAVAccount, SetupPage, davx5_link, webcal_url
from plugin.web.link_pages import document, language_of

__all__ = ["device_page_html", "profile_description", "setup_page_html"]

_WORDS: dict[str, dict[str, str]] = {
    "da": {
        "title": "Sæt din kalender op",
        "intro": "Her kobler du omsorgskalenderen for {names} til din egen kalender.",
        "and": "og",
        "apple_h": "iPhone, iPad og Mac",
        "apple_p": (
            "Hent profilen, og installér den under Indstillinger \N{RIGHTWARDS ARROW} "
            "Profil hentet. Så kommer kalenderen af sig selv."
        ),
        "apple_button": "Hent profil til iPhone, iPad og Mac",
        "device_h": "Android (DAVx\N{SUPERSCRIPT FIVE}) og Thunderbird",
        "device_p": (
            "Installér appen DAVx\N{SUPERSCRIPT FIVE} fra Google Play eller F-Droid, og tryk "
            "så på knappen: du får et link og en QR-kode med dine oplysninger."
        ),
        "device_button": "Vis oplysninger til en ny enhed",
        "new_password": (
            "Hver gang du henter en profil eller viser oplysningerne, får du en ny "
            "adgangskode. Den gamle holder op med at virke, så en enhed, du allerede har sat "
            "op, skal have den nye."
        ),
        "feed_h": "Google Kalender og Outlook",
        "feed_p": (
            "Abonnér på denne adresse. Google Kalender: Andre kalendere \N{RIGHTWARDS ARROW} "
            "Fra webadresse. Outlook: Tilføj kalender \N{RIGHTWARDS ARROW} Abonner fra "
            "internettet. Kalenderen opdateres hver eller hver anden time; en opgave tager du "
            "via linket i aftalen."
        ),
        "feed_open": "Åbn i din kalender-app",
        "what": "Hvad vil du hente?",
        "device_title": "Din nye enhed",
        "device_link_p": (
            "På en Android-telefon med DAVx\N{SUPERSCRIPT FIVE}: tryk på linket, eller scan "
            "QR-koden."
        ),
        "device_link": "Åbn i DAVx\N{SUPERSCRIPT FIVE}",
        "qr": "QR-kode til DAVx\N{SUPERSCRIPT FIVE}",
        "thunderbird_h": "Thunderbird og andre kalender-apps",
        "tb_1": "Vælg Ny kalender \N{RIGHTWARDS ARROW} På netværket.",
        "tb_2": "Skriv brugernavnet og adressen nedenfor, og klik Find kalendere.",
        "tb_3": "Skriv adgangskoden, når du bliver spurgt.",
        "address": "Adresse",
        "username": "Brugernavn",
        "password": "Adgangskode",
        "once": (
            "Adgangskoden vises kun her og kun én gang. Luk siden, når du er færdig. "
            "Enheder, du har sat op før, skal have den nye adgangskode."
        ),
        "care": "omsorg",
    },
    "en": {
        "title": "Set up your calendar",
        "intro": "Connect the care calendar for {names} to your own calendar.",
        "and": "and",
        "apple_h": "iPhone, iPad and Mac",
        "apple_p": (
            "Download the profile and install it under Settings \N{RIGHTWARDS ARROW} Profile "
            "Downloaded. The calendar then appears by itself."
        ),
        "apple_button": "Download profile for iPhone, iPad and Mac",
        "device_h": "Android (DAVx\N{SUPERSCRIPT FIVE}) and Thunderbird",
        "device_p": (
            "Install the DAVx\N{SUPERSCRIPT FIVE} app from Google Play or F-Droid, then press "
            "the button: you get a link and a QR code with your details."
        ),
        "device_button": "Show details for a new device",
        "new_password": (
            "Each time you download a profile or show the details, you get a new password. "
            "The old one stops working, so a device you set up before needs the new one."
        ),
        "feed_h": "Google Calendar and Outlook",
        "feed_p": (
            "Subscribe to this address. Google Calendar: Other calendars \N{RIGHTWARDS ARROW} "
            "From URL. Outlook: Add calendar \N{RIGHTWARDS ARROW} Subscribe from web. The "
            "calendar refreshes every hour or two; claim a task through the link in it."
        ),
        "feed_open": "Open in your calendar app",
        "what": "What would you like to get?",
        "device_title": "Your new device",
        "device_link_p": (
            "On an Android phone with DAVx\N{SUPERSCRIPT FIVE}: tap the link or scan the QR code."
        ),
        "device_link": "Open in DAVx\N{SUPERSCRIPT FIVE}",
        "qr": "QR code for DAVx\N{SUPERSCRIPT FIVE}",
        "thunderbird_h": "Thunderbird and other calendar apps",
        "tb_1": "Choose New Calendar \N{RIGHTWARDS ARROW} On the Network.",
        "tb_2": "Enter the user name and address below and click Find Calendars.",
        "tb_3": "Enter the password when asked.",
        "address": "Address",
        "username": "User name",
        "password": "Password",
        "once": (
            "The password is shown here once only. Close this page when you are done. Devices "
            "you set up before need the new password."
        ),
        "care": "care",
    },
}


def _names(page: SetupPage, words: dict[str, str]) -> str:
    names = [c.citizen.display_name for c in page.circles]
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} {words['and']} {names[-1]}"


def profile_description(page: SetupPage) -> str:
    """The account's name on the device, e.g. "Fru Jensen \N{EN DASH} omsorg"."""
    words = _WORDS[language_of(page.member.locale)]
    return f"{_names(page, words)} \N{EN DASH} {words['care']}"


def setup_page_html(page: SetupPage, *, form_token: str, token: str, extra: str = "") -> str:
    """The page; `extra` is more HTML after its sections (the member's capacity and relief
    forms: `care_pages`)."""
    language = language_of(page.member.locale)
    words = _WORDS[language]
    parts = [
        f"<h1>{escape(words['title'])}</h1>\n",
        f"<p>{escape(words['intro'].format(names=_names(page, words)))}</p>\n",
    ]
    if page.caldav:
        parts.append(
            f'<form method="post" action="/setup/{escape(token)}">\n'
            f'<input type="hidden" name="form_token" value="{escape(form_token)}">\n'
            f'<section aria-labelledby="apple">\n<h2 id="apple">{escape(words["apple_h"])}</h2>\n'
            f"<p>{escape(words['apple_p'])}</p>\n"
            f'<button type="submit" name="action" value="apple" class="primary">'
            f"{escape(words['apple_button'])}</button>\n</section>\n"
            '<section aria-labelledby="device">\n'
            f'<h2 id="device">{escape(words["device_h"])}</h2>\n'
            f"<p>{escape(words['device_p'])}</p>\n"
            f'<button type="submit" name="action" value="device">'
            f"{escape(words['device_button'])}</button>\n</section>\n"
            f"<p>{escape(words['new_password'])}</p>\n</form>\n"
        )
    parts.append(
        f'<section aria-labelledby="feed">\n<h2 id="feed">{escape(words["feed_h"])}</h2>\n'
        f"<p>{escape(words['feed_p'])}</p>\n"
        f"<p><code>{escape(page.feed_url)}</code></p>\n"
        f'<p><a href="{escape(webcal_url(page.feed_url))}">{escape(words["feed_open"])}</a></p>\n'
        "</section>\n"
    )
    parts.append(extra)
    return document(language, words["title"], "".join(parts))


def _qr_svg(data: str, title: str) -> str:
    out = io.BytesIO()
    segno.make(data, error="m").save(
        out, kind="svg", xmldecl=False, svgns=True, scale=5, border=3, title=title
    )
    return out.getvalue().decode().replace("<svg ", '<svg role="img" focusable="false" ', 1)


def device_page_html(page: SetupPage, account: CalDAVAccount) -> str:
    language = language_of(page.member.locale)
    words = _WORDS[language]
    link = davx5_link(account)
    rows = [
        (words["username"], account.username),
        (words["address"], account.home_url),
        (words["password"], account.password),
    ]
    details = "".join(
        f"<dt>{escape(label)}</dt><dd><code>{escape(value)}</code></dd>\n" for label, value in rows
    )
    body = (
        f"<h1>{escape(words['device_title'])}</h1>\n"
        f'<p class="notice" role="status">{escape(words["once"])}</p>\n'
        f'<section aria-labelledby="android">\n'
        f'<h2 id="android">Android (DAVx\N{SUPERSCRIPT FIVE})</h2>\n'
        f"<p>{escape(words['device_link_p'])}</p>\n"
        f'<p><a href="{escape(link)}">{escape(words["device_link"])}</a></p>\n'
        f"<figure>{_qr_svg(link, words['qr'])}<figcaption>{escape(words['qr'])}</figcaption>"
        "</figure>\n</section>\n"
        f'<section aria-labelledby="tb">\n<h2 id="tb">{escape(words["thunderbird_h"])}</h2>\n'
        f"<ol><li>{escape(words['tb_1'])}</li><li>{escape(words['tb_2'])}</li>"
        f"<li>{escape(words['tb_3'])}</li></ol>\n<dl>\n{details}</dl>\n</section>\n"
    )
    return document(language, words["device_title"], body)

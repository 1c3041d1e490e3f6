"""A member's personal pages, addressed by token (no login, no cookies):

    GET  /c/{token}            the claim page of one occurrence (HTML, da/en)
    POST /c/{token}            claim, release or pass (`action`), with the page's `form_token`
    GET  /feeds/{token}.ics    the member's ICS feed
    GET  /setup/{token}        the member's setup page (calendar apps, feed)
    POST /setup/{token}        `action` apple: a .mobileconfig; device: a DAVx5 link, QR code and
                               the account for Thunderbird (each issues a new app password);
                               capacity, relief: the member's own (`care_pages`)

Tokens are explained in `plugin.services.links`; what a claim does in
`plugin.services.claim_links`; the feed in `plugin.services.feed`; the setup page in
`plugin.services.setup`.

Every answer carries `Referrer-Policy: no-referrer` (the token is the URL: it must not leak to
another site through a Referer) and `X-Content-Type-Options: nosniff`. Claim pages are
`Cache-Control: no-store` and may not be framed (CSP `frame-ancestors 'none'`, clickjacking);
so are setup pages, which the same CSRF rules below protect.
Requests are rate-limited in process (`LinkLimits`): per client address and per token for the
claim page, 429 with Retry-After. The feed is limited mainly per token, because subscription
services (Google, Microsoft) fetch many members' feeds from few addresses.

Cross-site request forgery. The usual defence, a SameSite cookie, does not apply: there is no
cookie and no session — the capability is the token in the URL, and a forged POST would have
to name it. What is left to stop is a page elsewhere that learned a member's link (a leaked URL,
a shared calendar) and makes the member's browser — or anyone's — submit a claim without a
person deciding to. A POST therefore needs both:

1. a form token from a page this server rendered for this very link (`links.form_token`: the
   issue time and an HMAC under the member's link secret over the claim token and that time,
   valid for two hours). A cross-site page cannot read our page (same-origin policy; nothing is
   cached, `no-store`), and without the link secret it cannot make one; a token copied from
   one link does not fit another. Stateless: nothing to store, and it works across several
   `carecal serve` instances and in browsers that block cookies.
2. no cross-site origin: `Sec-Fetch-Site`, when sent (every current browser), must be
   `same-origin` or `none`; without it, `Origin`, when sent, must be `server.public_url`'s
   origin or the request's own. `Origin: null` proves nothing either way — it is what a
   browser sends for our own form, because the page's `Referrer-Policy: no-referrer` also
   hides the origin of its POSTs — so then, as for browsers without either header, the form
   token decides.

GET never changes anything (link scanners in mail and chat apps fetch URLs), and the page
cannot be framed, so a click cannot be stolen on another site either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from plugin.config import EmbeddedCalendarSettings
from plugin.domain.claims import ClaimOutcome
from plugin.services.claim_links import (
    ClaimPage,
    Refused,
    act_through_link,
    asks_for,
    open_claim_page,
)
from plugin.services.claiming import Ask
from plugin.services.feed import member_feed
from plugin.services.links import Refusal, check_form_token, form_token
from plugin.services.setup import apple_profile, issue_device_account, open_setup_page
from plugin.web.body import first_value, read_form
from plugin.web.care_pages import CARE_ACTIONS, care_action, care_page
from plugin.web.link_pages import (
    CSP,
    LANGUAGES,
    claim_page_html,
    language_of,
    message_page_html,
)
from plugin.web.ratelimit import Rate, RateLimiter
from plugin.web.setup_pages import device_page_html, profile_description
from plugin.web.state import state_of

__all__ = ["LinkLimits", "routes"]

MAX_KEY_CHARS = 256  # of a token used as a limiter key
_ASKS = {ask.value: ask for ask in Ask}
_COMMON = {"referrer-policy": "no-referrer", "x-content-type-options": "nosniff"}
_PAGE_HEADERS = _COMMON | {
    "cache-control": "no-store",
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-robots-tag": "noindex, nofollow",
}


@dataclass
class LinkLimits:
    """The limiters of one app; defaults suit people, not scripts."""

    page_per_address: RateLimiter = field(
        default_factory=lambda: RateLimiter(Rate(burst=30, per_minute=30))
    )
    page_per_token: RateLimiter = field(
        default_factory=lambda: RateLimiter(Rate(burst=20, per_minute=20))
    )
    feed_per_token: RateLimiter = field(
        default_factory=lambda: RateLimiter(Rate(burst=10, per_minute=6))
    )
    feed_per_address: RateLimiter = field(
        default_factory=lambda: RateLimiter(Rate(burst=600, per_minute=600))
    )


def routes(limits: LinkLimits | None = None) -> list[BaseRoute]:
    found = limits or LinkLimits()

    async def claim_page(request: Request) -> Response:
        return await _claim_page(request, found)

    async def feed(request: Request) -> Response:
        return await _feed(request, found)

    async def setup_page(request: Request) -> Response:
        return await _setup_page(request, found)

    return [
        Route("/c/{token}", claim_page, methods=["GET", "POST"], name="claim_page"),
        Route("/feeds/{token}.ics", feed, methods=["GET"], name="feed"),
        Route("/setup/{token}", setup_page, methods=["GET", "POST"], name="setup_page"),
    ]


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _limited(pairs: list[tuple[RateLimiter, str]]) -> float:
    """The wait of the first limiter that refuses, or 0.0."""
    for limiter, key in pairs:
        wait = limiter.check(key[:MAX_KEY_CHARS])
        if wait:
            return wait
    return 0.0


def _accepted_language(request: Request) -> str:
    """The first of da/en in Accept-Language by preference, else da."""
    best, best_q = "da", -1.0
    for position, part in enumerate(request.headers.get("accept-language", "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        language = tag.split("-")[0].lower()
        score = q - position * 1e-6  # earlier wins among equals
        if language in LANGUAGES and score > best_q:
            best, best_q = language, score
    return best


def _message(request: Request, kind: str, status: int, locale: str | None = None) -> Response:
    language = language_of(locale) if locale else _accepted_language(request)
    return HTMLResponse(message_page_html(kind, language), status, headers=_PAGE_HEADERS)


def _refused(request: Request, refused: Refused) -> Response:
    status = 404 if refused.reason is Refusal.UNKNOWN else 410
    return _message(request, refused.reason.value, status, refused.locale)


def _page(
    page: ClaimPage, issued_form: str, *, outcome: ClaimOutcome | None = None, acted: bool = False
) -> Response:
    html = claim_page_html(
        page, asks=asks_for(page), form_token=issued_form, outcome=outcome, acted=acted
    )
    return HTMLResponse(html, headers=_PAGE_HEADERS)


def _same_origin(request: Request, public_url: str) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True  # the form token decides
    public = urlsplit(public_url)
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return origin in (f"{public.scheme}://{public.netloc}", own)


def _busy(request: Request, limits: LinkLimits, token: str) -> Response | None:
    wait = _limited([(limits.page_per_address, _address(request)), (limits.page_per_token, token)])
    if not wait:
        return None
    response = _message(request, "busy", 429)
    response.headers["retry-after"] = RateLimiter.retry_after(wait)
    return response


async def _claim_page(request: Request, limits: LinkLimits) -> Response:
    token = request.path_params["token"]
    busy = _busy(request, limits, token)
    if busy is not None:
        return busy
    state = state_of(request)
    now = state["clock"]()
    store = state["store"]
    if request.method in ("GET", "HEAD"):  # Starlette answers HEAD with the GET route
        page = await open_claim_page(store, token, now=now)
        if isinstance(page, Refused):
            return _refused(request, page)
        return _page(page, form_token(page.link, token, issued=now))
    # POST
    if not _same_origin(request, state["settings"].server.public_url):
        return _message(request, "refused", 403)
    form = await read_form(request)
    if form is None:
        return _message(request, "refused", 400)
    # What the host said before this moment holds: a member it just removed (a webhook
    # accepted, not yet applied) acts no more, as with the API.
    await state["applier"].catch_up()
    ask = _ASKS.get(first_value(form, "action"))
    given = first_value(form, "form_token")
    page = await open_claim_page(store, token, now=now)
    if isinstance(page, Refused):
        return _refused(request, page)
    if ask is None or not check_form_token(page.link, token, given, now=now):
        return _message(request, "refused", 403, page.member.locale)
    after, outcome = await act_through_link(store, token, ask, now=now)
    if isinstance(after, Refused):
        return _refused(request, after)
    return _page(after, form_token(after.link, token, issued=now), outcome=outcome, acted=True)


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ prefixes are ignored."""
    if header.strip() == "*":
        return True
    return any(part.strip().removeprefix("W/") == etag for part in header.split(","))


async def _feed(request: Request, limits: LinkLimits) -> Response:
    token = request.path_params["token"]
    wait = _limited([(limits.feed_per_token, token), (limits.feed_per_address, _address(request))])
    if wait:
        return PlainTextResponse(
            "Too many requests\n",
            429,
            headers=_COMMON | {"retry-after": RateLimiter.retry_after(wait)},
        )
    state = state_of(request)
    feed = await member_feed(state["store"], state["settings"], token, now=state["clock"]())
    if isinstance(feed, Refusal):
        status = 404 if feed is Refusal.UNKNOWN else 410
        text = "Not found\n" if status == 404 else "Gone: this feed was withdrawn\n"
        return PlainTextResponse(text, status, headers=_COMMON | {"cache-control": "no-store"})
    headers = _COMMON | {
        "etag": feed.etag,
        # Kept by the subscriber only, and revalidated with the ETag each time.
        "cache-control": "private, no-cache",
    }
    if _etag_matches(request.headers.get("if-none-match", ""), feed.etag):
        return Response(status_code=304, headers=headers)
    return Response(
        feed.body,
        headers=headers | {"content-disposition": 'inline; filename="carecal.ics"'},
        media_type="text/calendar; charset=utf-8",
    )


async def _setup_page(request: Request, limits: LinkLimits) -> Response:
    token = request.path_params["token"]
    busy = _busy(request, limits, token)
    if busy is not None:
        return busy
    state = state_of(request)
    settings = state["settings"]
    public_url = settings.server.public_url
    now = state["clock"]()
    embedded = isinstance(settings.calendar, EmbeddedCalendarSettings)
    if request.method == "POST":
        await state["applier"].catch_up()  # a member the host just removed acts no more
    page = await open_setup_page(state["store"], public_url, token, embedded=embedded)
    if isinstance(page, Refusal):
        return _refused(request, Refused(page))
    if request.method in ("GET", "HEAD"):  # with the capacity and relief forms (care_pages)
        return await care_page(request, page, token, now=now, headers=_PAGE_HEADERS)
    if not _same_origin(request, public_url):
        return _message(request, "refused", 403, page.member.locale)
    form = await read_form(request)
    if form is None:
        return _message(request, "refused", 400, page.member.locale)
    action = first_value(form, "action")
    if action in CARE_ACTIONS:  # the member's capacity and relief (care_pages)
        done = await care_action(request, page, form, token, now=now, headers=_PAGE_HEADERS)
        return done or _message(request, "refused", 403, page.member.locale)
    if (
        not page.caldav
        or action not in ("apple", "device")
        or not check_form_token(page.link, token, first_value(form, "form_token"), now=now)
    ):
        return _message(request, "refused", 403, page.member.locale)
    account = await issue_device_account(state["store"], public_url, page, now=now)
    if account is None:
        return _refused(request, Refused(Refusal.REMOVED))
    if action == "device":
        return HTMLResponse(device_page_html(page, account), headers=_PAGE_HEADERS)
    profile = apple_profile(account, description=profile_description(page), organization="carecal")
    return Response(
        profile,
        media_type="application/x-apple-aspen-config",
        headers=_PAGE_HEADERS
        | {"content-disposition": 'attachment; filename="carecal.mobileconfig"'},
    )

"""The staff dashboard, server-rendered under `/staff/` (HTML, Danish and English):

    GET  /staff/                        the tenant's circles
    GET  /staff/circles/{citizen_id}    one circle: who holds what in the coming four weeks,
                                        unfilled and at-risk items, members' load against
                                        their capacity (an SVG chart and a table), open
                                        relief requests
    GET  /staff/login, POST /staff/login   staff sign in: tenant id + `staff_password`
    POST /staff/logout                  sign out (a form token bound to the session)

Who gets in (`plugin.web.staff_auth`): `Authorization: Bearer <the tenant's api_token>`, or
the session cookie a login sets. Without either a page request is sent to the login page
(303); a bearer token that fits no tenant is refused (401). Everything is looked up inside
the tenant the credential names, so another tenant's circle is simply not found (404).

Language: `?lang=da|en`, else Accept-Language, else the tenant's locale. Pages carry the same
protective headers as the members' pages (`no-store`, a strict CSP, no framing, no referrer,
`noindex`). POSTs must not come cross-site (`Sec-Fetch-Site`/`Origin`, as the claim page);
login attempts are rate-limited per client address.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from plugin.config import Settings, TenantSettings
from plugin.services.dashboard import list_circles, read_dashboard
from plugin.web.body import first_value, read_form
from plugin.web.link_pages import LANGUAGES
from plugin.web.links import _accepted_language, _address, _same_origin
from plugin.web.ratelimit import Rate, RateLimiter
from plugin.web.schemas import PathIdConvertor
from plugin.web.staff_auth import (
    Session,
    check_bearer,
    check_login,
    check_logout_token,
    issue_session,
    logout_token,
    read_session,
)
from plugin.web.staff_pages import (
    STAFF_CSP,
    circle_page_html,
    index_page_html,
    login_page_html,
    message_page_html,
)
from plugin.web.state import state_of

__all__ = ["StaffLimits", "routes"]

log = logging.getLogger(__name__)
_NEXT = re.compile(r"\A/staff/(circles/[A-Za-z0-9._:%-]{1,400})?\Z")
_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": STAFF_CSP,
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "x-robots-tag": "noindex, nofollow",
    "vary": "Accept-Language, Authorization, Cookie",
}


@dataclass
class StaffLimits:
    login_per_address: RateLimiter = field(
        default_factory=lambda: RateLimiter(Rate(burst=10, per_minute=6))
    )


@dataclass(frozen=True, slots=True)
class _Staff:
    tenant: TenantSettings
    session: Session | None  # None: a bearer token


def routes(limits: StaffLimits | None = None) -> list[BaseRoute]:
    found = limits or StaffLimits()

    async def login(request: Request) -> Response:
        return await _login(request, found)

    return [
        Mount(
            "/staff",
            routes=[
                Route("/", index, methods=["GET"], name="staff_index"),
                Route(
                    f"/circles/{{citizen_id:{PathIdConvertor.name}}}",
                    circle,
                    methods=["GET"],
                    name="staff_circle",
                ),
                Route("/login", login, methods=["GET", "POST"], name="staff_login"),
                Route("/logout", logout, methods=["POST"], name="staff_logout"),
            ],
        )
    ]


def cookie_name(settings: Settings) -> str:
    """`__Host-` (Secure, Path=/, no Domain: no subdomain can set or shadow it) under https."""
    return "__Host-carecal-staff" if _https(settings) else "carecal-staff"


def _https(settings: Settings) -> bool:
    return settings.server.public_url.startswith("https://")


def _lifetime(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.staff.session_minutes)


def _lang_param(request: Request) -> str | None:
    lang = request.query_params.get("lang")
    return lang if lang in LANGUAGES else None


def _language(request: Request, tenant: TenantSettings | None = None) -> str:
    explicit = _lang_param(request)
    if explicit:
        return explicit
    if "accept-language" in request.headers or tenant is None:
        return _accepted_language(request)
    return tenant.locale


def _html(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status, headers=_HEADERS)


def _message(request: Request, kind: str, status: int, language: str | None = None) -> Response:
    return _html(message_page_html(kind, language or _language(request)), status)


def _who(request: Request) -> _Staff | Response | None:
    """The staff member's tenant; a 401 response for a bearer token that fits no tenant;
    None when no credentials came (or the session ended)."""
    settings = state_of(request)["settings"]
    header = request.headers.get("authorization")
    if header is not None:
        tenant = check_bearer(settings.tenants, header)
        if tenant is None:
            response = _message(request, "refused", 401)
            response.headers["www-authenticate"] = 'Bearer realm="carecal staff"'
            return response
        return _Staff(tenant, None)
    found = read_session(
        settings.tenants,
        request.cookies.get(cookie_name(settings)),
        now=state_of(request)["clock"](),
        lifetime=_lifetime(settings),
    )
    return None if found is None else _Staff(*found)


def _to_login(request: Request) -> Response:
    target = request.url.path
    query = {"next": target} if _NEXT.match(target) and target != "/staff/" else {}
    lang = _lang_param(request)
    if lang:
        query["lang"] = lang
    suffix = f"?{urlencode(query)}" if query else ""
    return RedirectResponse(f"/staff/login{suffix}", 303, headers=_HEADERS)


def _logout_token(staff: _Staff) -> str | None:
    return None if staff.session is None else logout_token(staff.tenant, staff.session)


async def index(request: Request) -> Response:
    staff = _who(request)
    if staff is None:
        return _to_login(request)
    if isinstance(staff, Response):
        return staff
    citizens = await list_circles(state_of(request)["store"], staff.tenant.id)
    html = index_page_html(
        citizens,
        _language(request, staff.tenant),
        lang_param=_lang_param(request),
        logout_token=_logout_token(staff),
    )
    return _html(html)


async def circle(request: Request) -> Response:
    staff = _who(request)
    if staff is None:
        return _to_login(request)
    if isinstance(staff, Response):
        return staff
    state = state_of(request)
    language = _language(request, staff.tenant)
    await state["applier"].catch_up()  # what the host just sent is shown
    data = await read_dashboard(
        state["store"],
        staff.tenant.id,
        request.path_params["citizen_id"],
        now=state["clock"](),
        at_risk=timedelta(hours=state["settings"].staff.at_risk_hours),
    )
    if data is None:
        return _message(request, "not_found", 404, language)
    html = circle_page_html(
        data, language, lang_param=_lang_param(request), logout_token=_logout_token(staff)
    )
    return _html(html)


async def _login(request: Request, limits: StaffLimits) -> Response:
    state = state_of(request)
    settings = state["settings"]
    if request.method in ("GET", "HEAD"):  # Starlette answers HEAD with the GET route
        next_path = request.query_params.get("next", "")
        return _html(
            login_page_html(
                _language(request), next_path=next_path if _NEXT.match(next_path) else ""
            )
        )
    wait = limits.login_per_address.check(_address(request))
    if wait:
        response = _message(request, "busy", 429)
        response.headers["retry-after"] = RateLimiter.retry_after(wait)
        return response
    if not _same_origin(request, settings.server.public_url):
        return _message(request, "bad_request", 403)
    form = await read_form(request)
    if form is None:
        return _message(request, "bad_request", 400)
    lang = first_value(form, "lang")
    language = lang if lang in LANGUAGES else _language(request)
    next_path = first_value(form, "next")
    next_path = next_path if _NEXT.match(next_path) else "/staff/"
    tenant_id = first_value(form, "tenant").strip()
    tenant = check_login(settings.tenants, tenant_id, first_value(form, "password"))
    if tenant is None:
        # For whoever runs carecal to see guessing (the limit is per address; the address is
        # not logged). An unknown tenant id as typed is not logged either: it may be the
        # password typed into the wrong field.
        known = any(t.id == tenant_id for t in settings.tenants)
        log.warning("staff login refused", extra={"tenant": tenant_id if known else "(unknown)"})
        html = login_page_html(language, tenant_id=tenant_id[:64], failed=True, next_path=next_path)
        return _html(html, 401)
    session = issue_session(tenant, now=state["clock"]())
    target = f"{next_path}?lang={language}" if lang in LANGUAGES else next_path
    response = RedirectResponse(target, 303, headers=_HEADERS)
    _set_cookie(response, settings, session.value)
    return response


def _set_cookie(response: Response, settings: Settings, value: str, *, clear: bool = False) -> None:
    secure = _https(settings)
    response.set_cookie(
        cookie_name(settings),
        value,
        max_age=0 if clear else int(_lifetime(settings).total_seconds()),
        path="/" if secure else "/staff",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


async def logout(request: Request) -> Response:
    settings = state_of(request)["settings"]
    if not _same_origin(request, settings.server.public_url):
        return _message(request, "bad_request", 403)
    staff = _who(request)
    form = await read_form(request)
    if isinstance(staff, _Staff) and staff.session is not None:
        if form is None or not check_logout_token(
            staff.tenant, staff.session, first_value(form, "form_token")
        ):
            return _message(request, "bad_request", 403)
    # Signed out (or never signed in): the cookie goes either way.
    response = RedirectResponse("/staff/login", 303, headers=_HEADERS)
    _set_cookie(response, settings, "", clear=True)
    return response

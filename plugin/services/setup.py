"""A member's setup page (`/setup/{token}`): connect their calendar app in one step.

What the page offers depends on how the member takes their calendar:

- `hosted` (the embedded CalDAV server): an Apple configuration profile (`.mobileconfig`, one
  tap on iPhone, iPad and Mac), a DAVx⁵ link and QR code for Android, and the address, user
  name and password for Thunderbird and other CalDAV apps;
- always: the member's ICS feed, for Google Calendar and Outlook (which cannot add a CalDAV
  account), as an https and a `webcal://` address.

A password is shown once and stored only as a hash, so every profile or device page issues a
new app password (`issue_calendar_credential`), which replaces the member's previous one: a
second device is set up from the same page, and the first one then needs the new password too
(the page says so). That is why getting a password is a POST, never a GET.

    profile = apple_profile(CalDAVAccount("https://omsorg.example", "north~m-anna", "pw"), ...)
    plistlib.loads(profile)["PayloadContent"][0]["CalDAVHostName"]  # 'omsorg.example'
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlsplit

from plugin.domain.model import Circle, Member
from plugin.services.calendar_access import caldav_username, issue_calendar_credential
from plugin.services.links import LinkKind, Refusal, feed_url, resolve
from plugin.services.ports import MemberLink, Store

__all__ = [
    "DAV_PATH",
    "CalDAVAccount",
    "SetupPage",
    "apple_profile",
    "davx5_link",
    "issue_device_account",
    "open_setup_page",
    "webcal_url",
]

DAV_PATH = "/dav"  # where create_app mounts the embedded server (adapters.caldav.embedded)


@dataclass(frozen=True, slots=True)
class CalDAVAccount:
    """Where and as whom a calendar app logs in; `public_url` is carecal's."""

    public_url: str
    username: str
    password: str

    @property
    def home_url(self) -> str:
        """`https://omsorg.example/dav/north~m-anna/`: the member's calendar home."""
        return f"{self.public_url}{DAV_PATH}/{self.username}/"


@dataclass(frozen=True, slots=True)
class SetupPage:
    link: MemberLink
    member: Member  # as in the first of their circles (name, locale)
    circles: tuple[Circle, ...]
    caldav: bool  # the member takes (some) calendar from the embedded server
    username: str
    feed_url: str


def webcal_url(feed: str) -> str:
    """Apple Calendar and Outlook subscribe to `webcal://…` when it is tapped."""
    return "webcal://" + feed.split("://", 1)[1]


def davx5_link(account: CalDAVAccount) -> str:
    """DAVx⁵'s login link: `caldavs://user:password@host/path/` (caldav:// over plain http),
    which opens its login screen with everything filled in."""
    parts = urlsplit(account.home_url)
    scheme = "caldavs" if parts.scheme == "https" else "caldav"
    user = f"{quote(account.username, safe='')}:{quote(account.password, safe='')}"
    return f"{scheme}://{user}@{parts.netloc}{parts.path}"


def apple_profile(account: CalDAVAccount, *, description: str, organization: str) -> bytes:
    """An (unsigned) configuration profile with one CalDAV account payload. Its identifiers
    are stable per server and user, so installing a newer profile replaces the older one."""
    parts = urlsplit(account.home_url)
    https = parts.scheme == "https"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if https else 80)
    identifier = f"carecal.{host}.{account.username}"
    payload = {
        "PayloadType": "com.apple.caldav.account",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.caldav",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{account.home_url}#caldav")).upper(),
        "PayloadDisplayName": description,
        "PayloadDescription": description,
        "CalDAVAccountDescription": description,
        "CalDAVHostName": host,
        "CalDAVPort": port,
        "CalDAVUseSSL": https,
        "CalDAVPrincipalURL": parts.path,
        "CalDAVUsername": account.username,
        "CalDAVPassword": account.password,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, account.home_url)).upper(),
        "PayloadDisplayName": description,
        "PayloadDescription": description,
        "PayloadOrganization": organization,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [payload],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


async def open_setup_page(
    store: Store, public_url: str, token: str, *, embedded: bool
) -> SetupPage | Refusal:
    """What the page shows; REMOVED when the member is in no circle any more (their links
    are revoked then, so this is a race at most)."""
    async with store.transaction() as tx:
        resolved = await resolve(tx, token, LinkKind.SETUP)
        if isinstance(resolved, Refusal):
            return resolved
        link, _ = resolved
        circles: list[Circle] = []
        for citizen_id in await tx.list_member_circles(link.tenant_id, link.member_id):
            circle = await tx.get_circle(link.tenant_id, citizen_id)
            if circle is not None and circle.member(link.member_id) is not None:
                circles.append(circle)
    if not circles:
        return Refusal.REMOVED
    members = [m for c in circles for m in c.members if m.id == link.member_id]
    return SetupPage(
        link=link,
        member=members[0],
        circles=tuple(circles),
        caldav=embedded and any(m.calendar == "hosted" for m in members),
        username=caldav_username(link.tenant_id, link.member_id),
        feed_url=feed_url(public_url, link),
    )


async def issue_device_account(
    store: Store, public_url: str, page: SetupPage, *, now: datetime
) -> CalDAVAccount | None:
    """A new app password for the member (replacing the previous one); None when the member
    left meanwhile."""
    issued = await issue_calendar_credential(
        store, page.link.tenant_id, page.link.member_id, now=now, channel="link"
    )
    if issued is None:
        return None
    return CalDAVAccount(public_url, issued.username, issued.password)

"""Logged-in CalDAV clients for the calendar resolver (`plugin.services.calendars`): a member's
own account, and carecal's service account on the municipality's server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from adapters.caldav.client import CalDAVClient, CalDAVSettings
from plugin.config import CaldavCalendarSettings
from plugin.services.calendars import Account, CalendarAccess

# A member's own server gets few connections from carecal: it syncs one view at a time.
ACCOUNT_CONNECTIONS = 2
ACCOUNT_TIMEOUT_SECONDS = 15.0
# A whole request to a member's server; a run makes a few, well within a job's lease.
ACCOUNT_DEADLINE_SECONDS = 30.0
# The most of one answer read from a member's server: its collection holds one circle's copies
# (a 5 000-copy listing is ~2 MB), and an answer is held whole, its XML tree ~10x larger.
ACCOUNT_MAX_ANSWER_BYTES = 16 * 1024 * 1024


@asynccontextmanager
async def open_account(account: Account) -> AsyncIterator[CalDAVClient]:
    """A client for a member's own account, closed when the block ends. Nothing about the
    server is assumed: the generic quirks, and errors recognised from the answers."""
    settings = CalDAVSettings(
        account.url,
        account.username,
        account.password,
        server="generic",
        max_connections=ACCOUNT_CONNECTIONS,
        timeout_seconds=ACCOUNT_TIMEOUT_SECONDS,
        deadline_seconds=ACCOUNT_DEADLINE_SECONDS,
        max_answer_bytes=ACCOUNT_MAX_ANSWER_BYTES,
    )
    async with CalDAVClient(settings) as client:
        yield client


@asynccontextmanager
async def municipal_calendar(
    settings: CaldavCalendarSettings, *, max_connections: int = 8
) -> AsyncIterator[CalendarAccess]:
    """carecal's service account on the municipality's CalDAV server (`calendar.type =
    "caldav"`), open for the block. Views live under the URL's path and are polled."""
    client = CalDAVClient(
        CalDAVSettings(
            settings.url,
            settings.username,
            settings.service_password(),
            server=settings.server,
            max_connections=max_connections,
        )
    )
    async with client:
        yield CalendarAccess(
            client,
            urlsplit(settings.url).path or "/",
            template=settings.collection_template,
            polled=True,
        )

"""What differs between CalDAV servers, as data: one frozen record per server kind.

The client reads these flags; it has no `if server == "radicale"` anywhere. Everything that can be
recognised from the answer itself (DAV:error precondition elements, a 207 whose only response is
a 404) is handled for every server alike and needs no flag here. Evidence for each flag is in
tests/contract/caldav/ and in the comments below (Radicale 3.9.0, Xandikos 0.4.10).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerQuirks:
    kind: str
    # caldav's compatibility profile (caldav.compatibility_hints) handed to AsyncDAVClient, so
    # the library never has to guess (or discover) what the server does. None: no profile.
    caldav_profile: str | None
    # MKCALENDAR needs the parent (principal) collection to exist and answers 409 otherwise:
    # MKCOL the parent first; 405 "already there" is fine.
    needs_principal_mkcol: bool
    # sync-collection statuses that mean "invalid token" even WITHOUT a DAV:valid-sync-token
    # element in the body. With the element, any status counts, on every server.
    bare_invalid_token_statuses: frozenset[int]


GENERIC = ServerQuirks(
    kind="generic",
    caldav_profile=None,
    needs_principal_mkcol=False,
    bare_invalid_token_statuses=frozenset(),
)

RADICALE = ServerQuirks(
    kind="radicale",
    caldav_profile="radicale",
    # "Failed MKCALENDAR request on '/u/v/': parent folder is not existing '/u/'" -> 409.
    # With htpasswd auth the logged-in user's own principal is created on login (MKCOL -> 405),
    # but a service identity writing into a member's home finds nothing there.
    needs_principal_mkcol=True,
    # Radicale answers every invalid token with 403 + <valid-sync-token/> (malformed, unknown,
    # or older than storage.max_sync_token_age). Note: it also delays every 403 by auth.delay
    # (1 s by default, randomised 0.5x-1.5x), so a token fallback costs about a second.
    bare_invalid_token_statuses=frozenset(),
)

XANDIKOS = ServerQuirks(
    kind="xandikos",
    caldav_profile="xandikos",
    needs_principal_mkcol=False,
    # 0.4.10 answers 412 + <valid-sync-token/> for every bad token we tried; 0.4.8/0.4.9 crashed
    # with a bare 500 on tokens that are not hex SHAs (caldav compatibility_hints.xandikos,
    # "sync-token.invalid-token"). Treating that 500 as "resync" is safe: the full listing that
    # follows fails with CalendarUnavailable if the server is really broken.
    bare_invalid_token_statuses=frozenset({500}),
)

QUIRKS: dict[str, ServerQuirks] = {q.kind: q for q in (GENERIC, RADICALE, XANDIKOS)}

"""Where views live, and the refusal of members' calendar URLs on non-public addresses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plugin.domain.model import Delivery, ExternalCalendar, Member
from plugin.services.calendar_port import CalendarUnavailable, collection_path
from plugin.services.calendars import (
    MAX_JOB_KEY,
    Account,
    AccountClients,
    CalendarAccess,
    Calendars,
    KeptAnswers,
    MissingCalendar,
    NoCollection,
    UnsafeCalendarUrl,
    View,
    check_public_url,
    external_collection,
    literal_url_problem,
)
from tests.integration.support import make_settings

VIEW = View("north", "m-anna", "c-123")


def test_embedded_views_nest_under_each_members_home() -> None:
    assert VIEW.collection("/dav") == "/dav/north~m-anna/c-123/"
    assert View("north", "m.a", "c:1").collection("/dav/") == "/dav/north~m.a/c:1/"


@pytest.mark.parametrize(
    ("citizen", "template"),
    [("..", "{tenant}~{member}/{citizen}/"), (".", "{tenant}~{member}/{citizen}/"),
     ("c-1", "{member}/{citizen}/../")],
)  # fmt: skip
def test_a_path_that_would_climb_out_of_its_collection_is_refused(
    citizen: str, template: str
) -> None:
    """HTTP clients resolve "." and ".." before they send: "/dav/north~m-anna/./" would be
    Anna's whole home, and deleting her view there would delete every calendar she has."""
    view = View("north", "m-anna", citizen)
    with pytest.raises(ValueError, match="segment"):
        view.collection("/dav", template)
    with pytest.raises(ValueError, match="segment"):
        collection_path("/dav/north~m-anna/%2E%2E/")  # percent-encoded dots are dots too


def test_a_views_job_key_fits_the_jobs_table_whatever_its_ids() -> None:
    assert VIEW.job_key == "c-123:m-anna"
    longest = View("north", "m" * 128, "c" * 128)
    assert len(longest.job_key) <= MAX_JOB_KEY and longest.job_key.startswith("sha256:")
    assert longest.job_key != View("north", "m" * 127, "c" * 128).job_key


def test_a_template_lays_views_out_flat() -> None:
    template = "{tenant}~{member}~{citizen}/"
    assert VIEW.collection("/user/calendars/", template) == "/user/calendars/north~m-anna~c-123/"


def test_a_members_own_account_gets_one_collection_per_circle() -> None:
    home = "https://dav.example.org/cal/anna/"
    assert external_collection(home, "c-123") == "/cal/anna/carecal-c-123/"
    assert external_collection("https://dav.example.org", "c-1") == "/carecal-c-1/"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5232/anna/",
        "http://localhost/anna/",
        "https://dav.localhost/",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/",  # cloud metadata
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "ftp://dav.example.org/",
        "file:///etc/passwd",
        "https:///no-host",
    ],
)
def test_non_public_urls_are_refused_without_the_network(url: str) -> None:
    assert literal_url_problem(url) is not None


@pytest.mark.parametrize(
    "url", ["https://dav.example.org/anna/", "https://93.184.215.14/", "https://[2a00:1450::1]/"]
)
def test_public_urls_pass(url: str) -> None:
    assert literal_url_problem(url) is None


def resolving_to(*addresses: str) -> object:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if not addresses:
            raise OSError(-2, "Name or service not known")
        return addresses

    return resolve


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    """DNS can point a harmless-looking name at the municipality's internal network."""
    with pytest.raises(UnsafeCalendarUrl, match="non-public"):
        await check_public_url("https://dav.example.org/", resolving_to("10.0.0.5"))  # type: ignore[arg-type]
    with pytest.raises(UnsafeCalendarUrl, match="non-public"):
        await check_public_url(
            "https://dav.example.org/",
            resolving_to("93.184.215.14", "127.0.0.1"),  # type: ignore[arg-type]
        )
    with pytest.raises(UnsafeCalendarUrl, match="does not resolve"):
        await check_public_url("https://nowhere.example/", resolving_to())  # type: ignore[arg-type]
    await check_public_url("https://dav.example.org/", resolving_to("93.184.215.14"))  # type: ignore[arg-type]


class _Opened:
    def __init__(self) -> None:
        self.accounts: list[Account] = []

    @asynccontextmanager
    async def __call__(self, account: Account) -> AsyncIterator[object]:
        self.accounts.append(account)
        yield object()


def anna(calendar: Delivery = "external", url: str = "https://dav.example.org/anna/") -> Member:
    external = ExternalCalendar(url, "anna", "app-pw") if calendar == "external" else None
    return Member(
        "m-anna",
        "Anna",
        "relative",
        "full",
        calendar=calendar,
        external=external,
    )


class Dns:
    """A resolver that answers from `answers` (a name missing: it fails) and notes each ask."""

    def __init__(self, **answers: str) -> None:
        self.answers = dict(answers)
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host.replace(".", "_") not in self.answers:
            raise OSError(-2, "Name or service not known")
        return [self.answers[host.replace(".", "_")]]


async def test_a_names_addresses_are_kept_for_a_while_and_asked_again_after() -> None:
    dns, clock = Dns(dav_example_org="93.184.215.14"), Ticks()
    kept = KeptAnswers(dns, keep_seconds=60, clock=clock)
    for _ in range(3):
        await check_public_url("https://dav.example.org/anna/", kept)
    assert dns.asked == ["dav.example.org"]
    clock.now += 60
    dns.answers["dav_example_org"] = "10.0.0.5"  # moved into the internal network
    with pytest.raises(UnsafeCalendarUrl, match="non-public"):
        await check_public_url("https://dav.example.org/bo/", kept)
    assert dns.asked == ["dav.example.org"] * 2


async def test_a_failed_lookup_is_not_kept() -> None:
    dns, clock = Dns(), Ticks()
    kept = KeptAnswers(dns, clock=clock)
    for _ in range(2):
        with pytest.raises(UnsafeCalendarUrl, match="does not resolve"):
            await check_public_url("https://dav.example.org/", kept)
    dns.answers["dav_example_org"] = "93.184.215.14"
    await check_public_url("https://dav.example.org/", kept)
    assert dns.asked == ["dav.example.org"] * 3


async def test_beyond_the_most_names_kept_the_least_recently_asked_goes() -> None:
    dns = Dns(a_example="93.184.215.14", b_example="93.184.215.15", c_example="93.184.215.16")
    kept = KeptAnswers(dns, most=2, clock=Ticks())
    for host in ["a.example", "b.example", "a.example", "c.example", "a.example", "b.example"]:
        await kept(host, 443)
    # b went when c came (a had been asked since); a stayed; b is asked again
    assert dns.asked == ["a.example", "b.example", "c.example", "b.example"]


async def test_a_members_account_is_checked_against_kept_answers(tmp_path: Path) -> None:
    """Every probe and sync opens a target: the name is looked up once a minute, not each."""
    dns = Dns(dav_example_org="93.184.215.14")
    resolver, opened = calendars(tmp_path, allow_private=False, resolve=KeptAnswers(dns))
    for _ in range(3):
        async with resolver.target(VIEW, anna()):
            pass
    assert dns.asked == ["dav.example.org"] and len(opened.accounts) == 3


def calendars(
    tmp_path: Path,
    *,
    allow_private: bool,
    service: CalendarAccess | None = None,
    resolve: object = None,
) -> tuple[Calendars, _Opened]:
    settings = make_settings(tmp_path)
    tenants = [
        t.model_copy(update={"allow_private_calendar_urls": allow_private})
        for t in settings.tenants
    ]
    opened = _Opened()
    resolver = Calendars(
        settings.model_copy(update={"tenants": tenants}),
        service=service,
        open_account=opened,  # type: ignore[arg-type]
        resolve=resolve or resolving_to("93.184.215.14"),  # type: ignore[arg-type]
    )
    return resolver, opened


async def test_an_external_member_is_reached_with_their_own_account(tmp_path: Path) -> None:
    resolver, opened = calendars(tmp_path, allow_private=False)
    async with resolver.target(VIEW, anna()) as target:
        assert target.collection == "/anna/carecal-c-123/" and target.polled
    assert opened.accounts == [Account("https://dav.example.org/anna/", "anna", "app-pw")]


async def test_a_private_member_url_is_refused_unless_the_tenant_allows_it(
    tmp_path: Path,
) -> None:
    resolver, opened = calendars(tmp_path, allow_private=False)
    with pytest.raises(UnsafeCalendarUrl):
        async with resolver.target(VIEW, anna(url="http://127.0.0.1:5232/anna/")):
            pass
    assert opened.accounts == []  # never connected
    resolver, opened = calendars(tmp_path, allow_private=True, resolve=resolving_to("10.0.0.1"))
    async with resolver.target(VIEW, anna(url="http://127.0.0.1:5232/anna/")) as target:
        assert target.collection == "/anna/carecal-c-123/"


async def test_hosted_views_need_the_service_client(tmp_path: Path) -> None:
    resolver, _ = calendars(tmp_path, allow_private=False)
    assert resolver.polled_deliveries == ("external",)
    with pytest.raises(MissingCalendar):
        async with resolver.target(VIEW, anna("hosted")):
            pass
    with pytest.raises(NoCollection):
        async with resolver.target(VIEW, anna("feed")):
            pass
    service = CalendarAccess(object(), "/user/calendars/", "{tenant}~{member}~{citizen}/", True)  # type: ignore[arg-type]
    resolver, _ = calendars(tmp_path, allow_private=False, service=service)
    assert resolver.polled_deliveries == ("hosted", "external")
    async with resolver.target(VIEW, anna("hosted")) as target:
        assert target.collection == "/user/calendars/north~m-anna~c-123/" and target.polled


# --- members' accounts' clients, kept open between uses ---------------------------------


class Opener:
    """An OpenAccount whose clients are numbered, and that notes what it opened and closed."""

    def __init__(self, *, failing_close: bool = False) -> None:
        self.opened: list[Account] = []
        self.closed: list[int] = []
        self.failing_close = failing_close

    @asynccontextmanager
    async def __call__(self, account: Account) -> AsyncIterator[Any]:
        number = len(self.opened)
        self.opened.append(account)
        try:
            yield number
        finally:
            self.closed.append(number)
            if self.failing_close:
                raise OSError("the socket was gone already")


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


ANNA = Account("https://dav.example.org/anna/", "anna", "app-pw")
BO = Account("https://dav.example.org/bo/", "bo", "bo-pw")


async def test_an_accounts_client_is_opened_once_and_shared() -> None:
    opener = Opener()
    pool = AccountClients(opener, keep_seconds=120, clock=Ticks())
    async with pool(ANNA) as first:
        async with pool(ANNA) as beside:  # a sync while the poll's probe still runs
            assert beside == first
    async with pool(ANNA) as later:
        assert later == first
    assert opener.opened == [ANNA] and opener.closed == [] and pool.kept == 1
    async with pool(replace(ANNA, password="new-pw")) as renewed:  # a new app password
        assert renewed != first
    await pool.aclose()
    assert sorted(opener.closed) == [0, 1] and pool.kept == 0


async def test_a_client_unused_for_a_while_is_closed_at_the_next_use() -> None:
    opener, ticks = Opener(), Ticks()
    pool = AccountClients(opener, keep_seconds=120, clock=ticks)
    async with pool(ANNA):
        async with pool(BO):
            pass
        ticks.now = 500  # Anna's client is in use: never closed under her sync
        async with pool(BO):
            pass
        assert opener.closed == []
    ticks.now = 619
    async with pool(BO):
        assert opener.closed == []  # Anna's was last used at 500: 119 s ago
    ticks.now = 620
    async with pool(BO):
        assert opener.closed == [0]
    async with pool(ANNA) as again:
        assert again == 2 and opener.opened == [ANNA, BO, ANNA]


async def test_beyond_the_most_kept_the_least_recently_used_idle_client_goes() -> None:
    opener, ticks = Opener(), Ticks()
    pool = AccountClients(opener, keep_seconds=120, most=2, clock=ticks)
    carl = Account("https://dav.example.org/carl/", "carl", "pw")
    async with pool(ANNA):
        async with pool(BO):
            pass
        async with pool(carl):  # three kept for a moment: Anna's is in use
            pass
        assert opener.closed == [1] and pool.kept == 2  # Bo's, the idle one used longest ago
    async with pool(BO):
        assert opener.closed == [1, 2]  # Carl's, as Anna's was used after it


async def test_a_client_whose_server_failed_is_not_handed_out_again() -> None:
    opener = Opener()
    pool = AccountClients(opener, keep_seconds=120, clock=Ticks())
    with pytest.raises(CalendarUnavailable):
        async with pool(ANNA) as first, pool(ANNA) as beside:
            assert beside == first
            raise CalendarUnavailable("503")
    assert opener.closed == [0] and pool.kept == 0
    async with pool(ANNA) as fresh:
        assert fresh == 1
    with pytest.raises(CalendarUnavailable):
        async with pool(ANNA) as failing:
            async with pool(ANNA) as other:  # the failure is the inner block's
                assert other == failing
            raise CalendarUnavailable("timeout")
    # Other errors (a refused password, a bug) say nothing about the connection.
    with pytest.raises(ValueError):
        async with pool(BO):
            raise ValueError("a bug")
    assert pool.kept == 1 and opener.closed == [0, 1]


async def test_a_client_that_fails_to_close_is_let_go(caplog: pytest.LogCaptureFixture) -> None:
    opener = Opener(failing_close=True)
    pool = AccountClients(opener, keep_seconds=120, clock=Ticks())
    async with pool(ANNA):
        pass
    await pool.aclose()
    assert opener.closed == [0] and pool.kept == 0
    assert "failed to close" in caplog.text

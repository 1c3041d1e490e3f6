"""The setup page's pure parts: the Apple profile, the DAVx5 link, webcal addresses."""

from __future__ import annotations

import plistlib
from urllib.parse import unquote, urlsplit

from plugin.services.setup import CalDAVAccount, apple_profile, davx5_link, webcal_url

HTTPS = CalDAVAccount("https://omsorg.aarhus.example", "north~m-anna", "p@ss/w:rd")
HTTP = CalDAVAccount("http://127.0.0.1:8080", "north~host!42", "pw")


def test_the_profile_names_server_port_path_and_user() -> None:
    profile = plistlib.loads(
        apple_profile(HTTPS, description="Fru Jensen \N{EN DASH} omsorg", organization="carecal")
    )
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadVersion"] == 1
    [account] = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.caldav.account"
    assert account["CalDAVHostName"] == "omsorg.aarhus.example"
    assert account["CalDAVPort"] == 443
    assert account["CalDAVUseSSL"] is True
    assert account["CalDAVPrincipalURL"] == "/dav/north~m-anna/"
    assert account["CalDAVUsername"] == "north~m-anna"
    assert account["CalDAVPassword"] == "p@ss/w:rd"
    assert account["CalDAVAccountDescription"] == "Fru Jensen \N{EN DASH} omsorg"
    plain = plistlib.loads(apple_profile(HTTP, description="x", organization="carecal"))
    [account] = plain["PayloadContent"]
    assert (account["CalDAVHostName"], account["CalDAVPort"], account["CalDAVUseSSL"]) == (
        "127.0.0.1", 8080, False,
    )  # fmt: skip


def test_profile_identifiers_are_stable_per_user_so_a_new_one_replaces_the_old() -> None:
    first = plistlib.loads(apple_profile(HTTPS, description="x", organization="o"))
    again = plistlib.loads(
        apple_profile(CalDAVAccount(HTTPS.public_url, HTTPS.username, "new"), description="x",
                      organization="o")
    )  # fmt: skip
    other = plistlib.loads(apple_profile(HTTP, description="x", organization="o"))
    for key in ("PayloadIdentifier", "PayloadUUID"):
        assert first[key] == again[key] != other[key]
        assert first["PayloadContent"][0][key] == again["PayloadContent"][0][key]
    assert first["PayloadUUID"] != first["PayloadContent"][0]["PayloadUUID"]


def test_the_davx5_link_carries_the_account() -> None:
    link = davx5_link(HTTPS)
    parts = urlsplit(link)
    assert parts.scheme == "caldavs"
    assert (parts.hostname, parts.path) == ("omsorg.aarhus.example", "/dav/north~m-anna/")
    assert (unquote(parts.username or ""), unquote(parts.password or "")) == (
        "north~m-anna", "p@ss/w:rd",
    )  # fmt: skip
    assert davx5_link(HTTP).startswith("caldav://north~host%2142:pw@127.0.0.1:8080/dav/")


def test_webcal_addresses() -> None:
    assert webcal_url("https://x.example/feeds/abc.ics") == "webcal://x.example/feeds/abc.ics"
    assert webcal_url("http://127.0.0.1:8080/feeds/a.ics") == "webcal://127.0.0.1:8080/feeds/a.ics"

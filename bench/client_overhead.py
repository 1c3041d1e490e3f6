"""What carecal's CalDAV client costs per request, next to the floor's bare httpx requests.

    .venv/bin/python -m bench.client_overhead            # ~20 s
    .venv/bin/python -m bench.client_overhead --repeat 60 --events 500

Each protocol step of one change (DESIGN's sync loop) against one Xandikos, on the same
collection, carecal's `adapters.caldav.client.CalDAVClient` (the caldav library's async client
on niquests, its XML read into the port's types) and the floor's `bench.dav_floor.Floor` (a
bare `httpx.AsyncClient`, ElementTree), interleaved, the median of `--repeat` runs each:

    probe      PROPFIND depth 0 of the collection
    delta      REPORT sync-collection since a token, one object changed since
    multiget   REPORT calendar-multiget of that object
    put        PUT with If-Match (each its own object; Xandikos commits to Git either way)

The server's share is the same for both (the same requests on the same data, give or take the
properties carecal's probe also asks for); the difference is the client's. It says how far
above the floor's time a sync on this client library can get at best: `bench.sync` measures
whole changes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from adapters.caldav.client import CalDAVClient, CalDAVSettings
from adapters.caldav.testing import xandikos_server
from bench.dav_floor import Floor

HOME = "/user/calendars/"
EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//carecal//bench//EN\r\nBEGIN:VEVENT\r\n"
    "UID:{uid}\r\nDTSTAMP:20270101T000000Z\r\nDTSTART:20270301T100000Z\r\n"
    "DTEND:20270301T110000Z\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def event(uid: str, summary: str) -> bytes:
    return EVENT.format(uid=uid, summary=summary).encode()


async def timed(call: Callable[[], Awaitable[object]], into: list[float]) -> None:
    started = time.perf_counter()
    await call()
    into.append(time.perf_counter() - started)


async def measure(url: str, events: int, repeat: int) -> dict[str, tuple[float, float]]:
    collection = f"{HOME}c/"
    settings = CalDAVSettings(url + HOME, "bench", "bench", server="xandikos")
    async with CalDAVClient(settings) as ours, httpx.AsyncClient(base_url=url) as bare:
        floor = Floor(bare)
        await ours.ensure_collection(collection, "bench")
        for n in range(events):
            await ours.create(collection, f"e{n}.ics", event(f"e{n}", "start"))
        etags = await ours.list_etags(collection)
        hrefs = sorted(etags)
        mine, theirs, member = hrefs[0], hrefs[1], hrefs[2]
        uid = {href: href.rsplit("/", 1)[1].removesuffix(".ics") for href in hrefs}
        times: dict[str, tuple[list[float], list[float]]] = {
            step: ([], []) for step in ("probe", "delta", "multiget", "put")
        }
        for n in range(repeat):
            token = await floor.sync_token(collection)
            # A member's change (not timed), for the delta and the multiget to find.
            written = await floor.put(member, event(uid[member], f"member {n}"), etags[member])
            etags[member] = written or ""
            c, f = times["probe"]
            await timed(lambda: ours.probe(collection), c)
            await timed(lambda: floor.sync_token(collection), f)
            c, f = times["delta"]
            await timed(lambda: ours.changes_since(collection, token), c)  # noqa: B023
            await timed(lambda: floor.changes_since(collection, token), f)  # noqa: B023
            c, f = times["multiget"]
            await timed(lambda: ours.fetch(collection, [member]), c)
            await timed(lambda: floor.multiget(collection, [member]), f)
            c, f = times["put"]

            async def put_ours(n: int = n) -> None:
                etags[mine] = (
                    await ours.update(mine, event(uid[mine], f"ours {n}"), etags[mine]) or ""
                )

            async def put_floor(n: int = n) -> None:
                written = await floor.put(theirs, event(uid[theirs], f"floor {n}"), etags[theirs])
                etags[theirs] = written or ""

            await timed(put_ours, c)
            await timed(put_floor, f)
    return {step: (statistics.median(c), statistics.median(f)) for step, (c, f) in times.items()}


def report(found: dict[str, tuple[float, float]], events: int, repeat: int) -> None:
    print(f"per request, a collection of {events} events, median of {repeat} (ms)")
    print(f"  {'step':<10}{'carecal':>10}{'floor':>10}{'carecal-floor':>15}{'ratio':>8}")
    total_c = total_f = 0.0
    for step, (c, f) in found.items():
        total_c, total_f = total_c + c, total_f + f
        print(f"  {step:<10}{1000 * c:>10.2f}{1000 * f:>10.2f}{1000 * (c - f):>15.2f}{c / f:>8.2f}")
    print(
        f"  {'the four':<10}{1000 * total_c:>10.2f}{1000 * total_f:>10.2f}"
        f"{1000 * (total_c - total_f):>15.2f}{total_c / total_f:>8.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client_overhead", description=__doc__)
    parser.add_argument("--events", type=int, default=50, help="objects in the collection (50)")
    parser.add_argument("--repeat", type=int, default=30, help="runs of each step (30)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder, xandikos_server(Path(folder)) as url:
        found = asyncio.run(measure(url, args.events, args.repeat))
    report(found, args.events, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

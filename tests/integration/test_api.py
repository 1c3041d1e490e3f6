"""`/api/v1` through the real app: the DST scenario, versions, cross-tenant denial, OpenAPI."""

from __future__ import annotations

import re

import httpx
from starlette.routing import Mount

from adapters.store.sql import SqlStore
from plugin.services.calendars import view_job_key
from plugin.services.claiming import Ask, decide
from plugin.services.view_sync import JOB_VIEW_SYNC
from plugin.web.app import create_app
from tests.integration.support import (
    NORTH_TOKEN,
    SOUTH_SECRET,
    SOUTH_TOKEN,
    Clock,
    auth,
    circle_event,
    make_settings,
    post_event,
    task_event,
)


async def test_weekly_task_shows_local_times_across_dst(client: httpx.AsyncClient) -> None:
    assert (await post_event(client, circle_event())).status_code == 202
    assert (await post_event(client, task_event())).status_code == 202

    response = await client.get("/api/v1/tasks/t-1", headers=auth())
    assert response.status_code == 200
    task = response.json()
    assert task["people_needed"] == 2
    starts = [o["start"] for o in task["occurrences"]]
    # Europe/Copenhagen moves to summer time on 28 March 2027: 10:00 stays 10:00 on the wall.
    assert starts == [
        "2027-03-16T10:00:00+01:00",
        "2027-03-23T10:00:00+01:00",
        "2027-03-30T10:00:00+02:00",
        "2027-04-06T10:00:00+02:00",
    ]
    assert [o["end"][11:16] for o in task["occurrences"]] == ["11:00"] * 4
    assert {o["free_slots"] for o in task["occurrences"]} == {2}
    assert {o["status"] for o in task["occurrences"]} == {"open"}
    assert len({o["id"] for o in task["occurrences"]}) == 4


async def test_older_version_never_rolls_back_a_newer_one(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    await post_event(client, circle_event())
    newer = task_event(version=2, start="2027-03-17T14:00:00", end="2027-03-17T15:00:00")
    assert (await post_event(client, newer)).status_code == 202
    older = task_event(version=1)
    response = await post_event(client, older)
    assert response.status_code == 202  # acknowledged: the host must not retry it
    task = (await client.get("/api/v1/tasks/t-1", headers=auth())).json()
    assert task["version"] == 2
    assert task["occurrences"][0]["start"] == "2027-03-17T14:00:00+01:00"
    async with store.transaction() as tx:
        audit = await tx.list_audit("north", "task:t-1")
    assert [entry.detail["outcome"] for entry in audit] == ["applied", "stale"]


async def test_cancellation_is_never_resurrected_by_a_late_upsert(
    client: httpx.AsyncClient,
) -> None:
    await post_event(client, circle_event())
    await post_event(client, task_event(version=1))
    cancel = {"type": "task.cancelled", "data": {"id": "t-1", "citizen_id": "c-123", "version": 3}}
    assert (await post_event(client, cancel)).status_code == 202
    late = await post_event(client, task_event(version=2))
    assert late.status_code == 202
    task = (await client.get("/api/v1/tasks/t-1", headers=auth())).json()
    assert task["status"] == "cancelled"
    assert {o["status"] for o in task["occurrences"]} == {"cancelled"}
    assert {o["free_slots"] for o in task["occurrences"]} == {0}


async def test_cancellation_arriving_before_the_task_wins(client: httpx.AsyncClient) -> None:
    cancel = {"type": "task.cancelled", "data": {"id": "t-9", "citizen_id": "c-123", "version": 2}}
    assert (await post_event(client, cancel)).status_code == 202
    unknown = await client.get("/api/v1/tasks/t-never", headers=auth())
    assert (unknown.status_code, unknown.json()["title"], unknown.json()["reason"]) == (
        404, "Not Found", "unknown_task"
    )  # fmt: skip
    # Nothing but its cancellation is known: no placeholder dressed as a task (1970, "other").
    only = await client.get("/api/v1/tasks/t-9", headers=auth())
    assert (only.status_code, only.json()["reason"]) == (404, "cancelled")
    late = await post_event(client, task_event(version=1, task_id="t-9"))
    assert late.status_code == 202
    only = await client.get("/api/v1/tasks/t-9", headers=auth())
    assert (only.status_code, only.json()["reason"]) == (404, "cancelled")  # the late one lost
    newer = await post_event(client, task_event(version=3, task_id="t-9"))
    assert newer.status_code == 202
    task = (await client.get("/api/v1/tasks/t-9", headers=auth())).json()
    assert task["status"] == "active" and task["occurrences"] != []


async def test_a_newer_upsert_after_cancellation_reinstates(client: httpx.AsyncClient) -> None:
    await post_event(client, task_event(version=1))
    cancel = {"type": "task.cancelled", "data": {"id": "t-1", "citizen_id": "c-123", "version": 2}}
    await post_event(client, cancel)
    assert (await post_event(client, task_event(version=3))).status_code == 202
    task = (await client.get("/api/v1/tasks/t-1", headers=auth())).json()
    assert task["status"] == "active"
    assert {o["status"] for o in task["occurrences"]} == {"open"}


async def test_visit_is_held_by_its_staff_member(client: httpx.AsyncClient) -> None:
    await post_event(client, circle_event())
    visit = {
        "type": "visit.assigned",
        "data": {
            "id": "v-9",
            "citizen_id": "c-123",
            "version": 1,
            "staff_member_id": "m-sara",
            "category": "visit",
            "start": "2027-03-24T09:00:00",
            "end": "2027-03-24T09:30:00",
            "timezone": "Europe/Copenhagen",
        },
    }
    assert (await post_event(client, visit)).status_code == 202
    task = (await client.get("/api/v1/tasks/v-9", headers=auth())).json()
    assert task["kind"] == "visit"
    [occurrence] = task["occurrences"]
    assert [c["member_id"] for c in occurrence["claims"]] == ["m-sara"]
    assert occurrence["claims"][0]["channel"] == "staff"
    assert occurrence["free_slots"] == 0


async def test_a_task_moved_to_another_citizen_leaves_the_first_circle(
    client: httpx.AsyncClient, store: SqlStore, clock: Clock
) -> None:
    """The host corrects a task entered for the wrong citizen: the circle it left has its
    calendars synced (so the task leaves them in one cycle), and a claim held by someone
    outside the new circle is released, the host told, while one inside it stays."""
    other = [
        {"id": "m-bo", "name": "Bo", "role": "relative", "visibility": "full",
         "locale": "en", "calendar": "hosted"},
        {"id": "m-dora", "name": "Dora", "role": "relative", "visibility": "full",
         "locale": "da", "calendar": "hosted"},
    ]  # fmt: skip
    await post_event(client, circle_event())
    await post_event(client, circle_event(citizen_id="c-456", members=other))
    await post_event(client, task_event())
    first, second = (await client.get("/api/v1/tasks/t-1", headers=auth())).json()["occurrences"][
        :2
    ]
    async with store.transaction() as tx:
        await decide(tx, "north", first["id"], "m-anna", Ask.CLAIM, channel="link", now=clock.now)
        await decide(tx, "north", second["id"], "m-bo", Ask.CLAIM, channel="link", now=clock.now)
    for job in await store.lease_jobs("w", now=clock.now, limit=100, lease_seconds=60):
        await store.finish_job(job.id, "w")
    while delivered := await store.due_outbox(now=clock.now, limit=100):  # the claims'
        for event in delivered:
            await store.mark_outbox_delivered(event.id, now=clock.now)

    moved = task_event(version=2, citizen_id="c-456")
    assert (await post_event(client, moved)).status_code == 202

    task = (await client.get("/api/v1/tasks/t-1", headers=auth())).json()
    assert task["citizen_id"] == "c-456"
    claims = {o["id"]: [c["member_id"] for c in o["claims"]] for o in task["occurrences"]}
    assert claims[first["id"]] == [] and claims[second["id"]] == ["m-bo"]
    events = await store.due_outbox(now=clock.now, limit=100)
    assert [(e.type, e.data["member_id"], e.data["channel"]) for e in events] == [
        ("task.released", "m-anna", "host")
    ]
    jobs = await store.lease_jobs("w", now=clock.now, limit=100, lease_seconds=60)
    synced = {job.key for job in jobs if job.kind == JOB_VIEW_SYNC}
    # Anna's and Sara's views of the circle it left, Bo's and Dora's of the one it joined
    assert synced == {
        view_job_key(citizen, member)
        for citizen, member in [("c-123", "m-anna"), ("c-123", "m-sara"),
                                ("c-456", "m-bo"), ("c-456", "m-dora")]
    }  # fmt: skip


async def test_a_visit_moved_to_another_citizen_stays_with_its_staff_member(
    client: httpx.AsyncClient, store: SqlStore, clock: Clock
) -> None:
    """Sara is in the first circle only: the visit stays hers, and the host is not told she
    released it (it was: released, then held again without a word)."""
    bo = {"id": "m-bo", "name": "Bo", "role": "relative", "visibility": "full",
          "locale": "en", "calendar": "hosted"}  # fmt: skip
    await post_event(client, circle_event())
    await post_event(client, circle_event(citizen_id="c-456", members=[bo]))
    for version, citizen in ((1, "c-123"), (2, "c-456")):
        visit = {"type": "visit.assigned", "data": {
            "id": "v-9", "citizen_id": citizen, "version": version,
            "staff_member_id": "m-sara", "category": "visit",
            "start": "2027-03-24T09:00:00", "end": "2027-03-24T09:30:00",
            "timezone": "Europe/Copenhagen"}}  # fmt: skip
        assert (await post_event(client, visit)).status_code == 202
    task = (await client.get("/api/v1/tasks/v-9", headers=auth())).json()
    assert task["citizen_id"] == "c-456"
    assert [c["member_id"] for c in task["occurrences"][0]["claims"]] == ["m-sara"]
    assert await store.due_outbox(now=clock.now, limit=100) == []


async def test_another_tenants_data_is_404_not_403(client: httpx.AsyncClient) -> None:
    await post_event(client, circle_event())
    await post_event(client, task_event())
    # South has its own citizen c-123 too: each token sees only its tenant's.
    await post_event(
        client, circle_event(citizen_id="c-south"), tenant="south", secret=SOUTH_SECRET
    )
    for path in ("/api/v1/tasks/t-1", "/api/v1/circles/c-123"):
        denied = await client.get(path, headers=auth(SOUTH_TOKEN))
        assert denied.status_code == 404
        assert "north" not in denied.text
        assert (await client.get(path, headers=auth(NORTH_TOKEN))).status_code == 200
    south_circle = await client.get("/api/v1/circles/c-south", headers=auth(NORTH_TOKEN))
    assert south_circle.status_code == 404


async def test_ids_no_host_could_have_sent_are_404_before_the_store_is_asked(
    client: httpx.AsyncClient,
) -> None:
    """A NUL byte in a path id was a 500 on PostgreSQL (it cannot even compare one)."""
    await post_event(client, circle_event())
    for method, path in [
        ("GET", "/api/v1/circles/%00"),
        ("GET", "/api/v1/tasks/c-123%00"),
        ("GET", "/api/v1/circles/c%0A123"),
        ("POST", "/api/v1/members/%00/calendar-credentials"),
        ("POST", "/api/v1/members/%00/links/renew"),
        ("POST", "/api/v1/occurrences/%00/assign"),
        ("GET", "/staff/circles/%00"),
    ]:
        answer = await client.request(method, path, headers=auth(), json={"member_id": "m-sara"})
        assert answer.status_code == 404, (method, path, answer.status_code)
    long_occurrence = f"/api/v1/occurrences/{'t' * 128}_20270316T1000/assign"  # 142 characters
    answer = await client.post(long_occurrence, headers=auth(), json={"member_id": "m-sara"})
    assert answer.json().get("reason") == "unknown_occurrence"  # the route took it


async def test_api_needs_a_valid_bearer_token(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/circles/c-123")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = await client.get("/api/v1/circles/c-123", headers=auth("not-a-token-at-all-xx"))
    assert wrong.status_code == 401


async def test_circle_api_never_shows_external_passwords(client: httpx.AsyncClient) -> None:
    event = circle_event()
    event["data"]["members"].append(
        {
            "id": "m-ext",
            "name": "Eva",
            "role": "network",
            "visibility": "limited",
            "locale": "da",
            "calendar": "external",
            "external": {
                "url": "https://dav.example.org/eva/",
                "username": "eva",
                "password": "eva-app-password-123",
            },
        }
    )
    assert (await post_event(client, event)).status_code == 202
    response = await client.get("/api/v1/circles/c-123", headers=auth())
    eva = next(m for m in response.json()["members"] if m["id"] == "m-ext")
    assert eva["external"] == {"url": "https://dav.example.org/eva/", "username": "eva"}
    assert "eva-app-password-123" not in response.text


async def test_openapi_describes_exactly_the_routes_that_exist(
    client: httpx.AsyncClient, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    document = (await client.get("/api/v1/openapi.json")).json()
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    app = create_app(make_settings(tmp_path))
    [api] = [r for r in app.routes if isinstance(r, Mount) and r.path == "/api/v1"]
    existing = {
        (method, re.sub(r":\w+}", "}", route.path))  # "{citizen_id:id}" is "{citizen_id}"
        for route in api.routes
        for method in (getattr(route, "methods", None) or ())
        if method != "HEAD"
    }
    assert documented == existing


async def test_health_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    await post_event(client, circle_event())
    removed = circle_event(version=2, members=[])
    await post_event(client, removed)
    # applied: 2 view syncs (Anna's and Sara's hosted views) and 3 withdrawals queued
    await client.get("/api/v1/circles/c-123", headers=auth())
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'carecal_jobs{status="queued"} 5.0' in metrics.text
    assert "x-request-id" in metrics.headers

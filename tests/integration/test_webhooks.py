"""`POST /webhooks/{tenant}`: every status in DESIGN.md's table, through the real app and store."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text

from adapters.host.signing import sign
from adapters.memory import MemoryStore
from adapters.store.sql import SqlStore
from plugin.logs import JsonFormatter
from plugin.web.app import create_app
from tests.integration.support import (
    FIXED_NOW,
    NORTH_OLD_SECRET,
    NORTH_SECRET,
    SOUTH_SECRET,
    auth,
    circle_event,
    make_settings,
    post_event,
    sign_event,
    task_event,
)

PROBLEM = "application/problem+json"


async def test_accepted_webhook_is_durable_and_visible(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    response = await post_event(client, circle_event())
    assert response.status_code == 202
    assert response.json() == {"status": "accepted"}
    # Recorded durably before the 202: the inbox holds it, pending or already applied.
    counts = await store.inbox_counts()
    assert counts.get("pending", 0) + counts.get("applied", 0) == 1
    circle = (await client.get("/api/v1/circles/c-123", headers=auth())).json()
    assert [m["id"] for m in circle["members"]] == ["m-anna", "m-bo", "m-sara"]
    assert (await store.inbox_counts()).get("applied", 0) == 1


async def test_versions_as_large_as_the_schema_allows_are_stored(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """Hosts often version by time (epoch milliseconds: beyond 32 bits): every version the
    schema accepts (up to 2**63 - 1) is stored and compared, on SQLite and PostgreSQL."""
    millis = 1_764_950_000_000
    for event in (circle_event(millis), task_event(millis), circle_event(2**63 - 1)):
        assert (await post_event(client, event)).status_code == 202
    task = (await client.get("/api/v1/tasks/t-1", headers=auth())).json()  # applied by now
    assert task["version"] == millis
    older = task_event(millis - 1, details="an older edit")
    assert (await post_event(client, older)).status_code == 202
    await client.get("/api/v1/tasks/t-1", headers=auth())
    counts = await store.inbox_counts()
    assert (counts.get("applied"), counts.get("stale"), counts.get("failed")) == (3, 1, 0)


async def test_the_inbox_and_the_jobs_count_on_past_32_bits(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """Their ids count up for good (rows are deleted, numbers never reused)."""
    beyond = 3_000_000_000
    async with store.engine.begin() as connection:
        if store.engine.dialect.name == "postgresql":
            for table, column in (("inbox", "seq"), ("jobs", "id"), ("audit", "id")):
                await connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), {beyond})")
                )
        else:  # the next rowid is one past the largest
            await connection.execute(
                text(
                    "INSERT INTO inbox (seq, tenant_id, webhook_id, event_type, received_at, "
                    f"status) VALUES ({beyond}, 'north', 'old', 'circle.updated', "
                    "'2027-01-01 00:00:00', 'applied')"
                )
            )
    assert (await post_event(client, circle_event())).status_code == 202
    assert (await post_event(client, task_event())).status_code == 202  # queues view syncs
    assert (await client.get("/api/v1/tasks/t-1", headers=auth())).status_code == 200
    counts = await store.inbox_counts()
    assert (counts.get("pending"), counts.get("failed")) == (0, 0)
    async with store.engine.connect() as connection:
        for table, column in (("inbox", "seq"), ("jobs", "id"), ("audit", "id")):
            query = text(f"SELECT count(*) FROM {table} WHERE {column} > {beyond}")
            if table == "inbox" or store.engine.dialect.name == "postgresql":
                assert (await connection.execute(query)).scalar_one() >= 1, table


async def test_the_longest_ids_and_locales_the_schema_allows_are_stored(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """Whatever passes the schema fits the tables, as PostgreSQL enforces their lengths: a
    citizen and members with 128-character ids (a view's job key joins two of them), the
    longest locale. Then the members leave (their withdrawal jobs have the same keys)."""
    citizen, anna, bo = "c" * 128, "a" * 128, "b" * 128
    members = [
        {"id": anna, "name": "Anna", "role": "relative", "visibility": "full",
         "locale": "da-DK", "calendar": "hosted"},
        {"id": bo, "name": "Bo", "role": "relative", "visibility": "full",
         "locale": "abc-abcd-abcdefg", "calendar": "hosted"},
    ]  # fmt: skip
    for event in (
        circle_event(1, members, citizen_id=citizen),
        dict(task_event(), data={**task_event()["data"], "id": "t" * 128, "citizen_id": citizen}),
        circle_event(2, [], citizen_id=citizen),
    ):
        assert (await post_event(client, event)).status_code == 202, event["type"]
    assert (await client.get(f"/api/v1/circles/{citizen}", headers=auth())).status_code == 200
    counts = await store.inbox_counts()
    assert (counts.get("applied"), counts.get("failed"), counts.get("pending")) == (3, 0, 0)


async def test_the_longest_webhook_id_is_recorded_and_a_longer_one_refused(
    client: httpx.AsyncClient,
) -> None:
    """The inbox's column holds 255 characters, as PostgreSQL enforces (SQLite would not)."""
    body, headers = sign_event(circle_event(), msg_id="m" * 255)
    assert (await client.post("/webhooks/north", content=body, headers=headers)).status_code == 202
    body, headers = sign_event(task_event(), msg_id="m" * 256)
    response = await client.post("/webhooks/north", content=body, headers=headers)
    assert response.status_code == 401 and "longer than 255" in response.text


async def test_replayed_webhook_id_is_answered_200_and_applied_once(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    await post_event(client, circle_event())
    body, headers = sign_event(task_event(), msg_id="msg_replayed")
    first = await client.post("/webhooks/north", content=body, headers=headers)
    second = await client.post("/webhooks/north", content=body, headers=headers)
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json() == {"status": "duplicate"}
    assert (await client.get("/api/v1/tasks/t-1", headers=auth())).status_code == 200
    async with store.transaction() as tx:
        audit = await tx.list_audit("north", "task:t-1")
    assert len(audit) == 1


async def test_same_webhook_id_in_another_tenant_is_not_a_duplicate(
    client: httpx.AsyncClient,
) -> None:
    north = await post_event(client, circle_event(), msg_id="msg_shared")
    south = await post_event(
        client, circle_event(), tenant="south", secret=SOUTH_SECRET, msg_id="msg_shared"
    )
    assert (north.status_code, south.status_code) == (202, 202)


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    body = b'{"type": "circle.updated", "data": '
    headers = {
        "webhook-id": "msg_bad_json",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": sign(NORTH_SECRET, "msg_bad_json", int(time.time()), body),
        "content-type": "application/json",
    }
    response = await client.post("/webhooks/north", content=body, headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["status"] == 400


async def test_bad_signature_is_401(client: httpx.AsyncClient) -> None:
    response = await post_event(client, circle_event(), secret=SOUTH_SECRET)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_tampered_body_is_401(client: httpx.AsyncClient) -> None:
    body, headers = sign_event(circle_event())
    tampered = body.replace(b"Fru Jensen", b"Hr. Jensen")
    response = await client.post("/webhooks/north", content=tampered, headers=headers)
    assert response.status_code == 401


async def test_missing_signature_headers_are_401(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/webhooks/north",
        content=json.dumps(circle_event()),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 401


async def test_stale_timestamp_is_401(client: httpx.AsyncClient) -> None:
    stale = int(time.time()) - 6 * 60
    response = await post_event(client, circle_event(), timestamp=stale)
    assert response.status_code == 401
    assert (response.json()["title"], response.json()["reason"]) == ("Unauthorized", "stale")
    future = int(time.time()) + 6 * 60
    assert (await post_event(client, circle_event(), timestamp=future)).status_code == 401


async def test_timestamp_within_tolerance_is_accepted(client: httpx.AsyncClient) -> None:
    slightly_old = int(time.time()) - 4 * 60
    response = await post_event(client, circle_event(), timestamp=slightly_old)
    assert response.status_code == 202


async def test_key_rotation_several_signatures_and_several_secrets(
    client: httpx.AsyncClient,
) -> None:
    # The host rotates: it signs with an unknown new key and with our current key.
    body = json.dumps(circle_event()).encode()
    now = int(time.time())
    unknown = "whsec_" + base64.b64encode(b"a-key-we-have-never-heard-of-00").decode()
    signatures = (
        f"{sign(unknown, 'msg_rot1', now, body)} {sign(NORTH_SECRET, 'msg_rot1', now, body)}"
    )
    headers = {
        "webhook-id": "msg_rot1",
        "webhook-timestamp": str(now),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }
    assert (await client.post("/webhooks/north", content=body, headers=headers)).status_code == 202
    # We rotate: the tenant still accepts its previous secret during the overlap.
    response = await post_event(client, circle_event(version=2), secret=NORTH_OLD_SECRET)
    assert response.status_code == 202
    # Only unknown keys: refused.
    only_unknown = {
        **headers,
        "webhook-id": "msg_rot2",
        "webhook-signature": sign(unknown, "msg_rot2", now, body),
    }
    response = await client.post("/webhooks/north", content=body, headers=only_unknown)
    assert response.status_code == 401


async def test_unknown_tenant_is_404(client: httpx.AsyncClient) -> None:
    response = await post_event(client, circle_event(), tenant="atlantis")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    event = circle_event()
    event["data"]["citizen"]["display_name"] = "x" * (300 * 1024)
    response = await post_event(client, event)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_chunked_oversized_body_is_413_without_reading_it_all(
    client: httpx.AsyncClient,
) -> None:
    sent = 0
    chunk = b"x" * 65536

    async def fifty_megabytes() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(50 * 1024 * 1024 // len(chunk)):
            sent += len(chunk)
            yield chunk

    response = await client.post(
        "/webhooks/north",
        content=fifty_megabytes(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    # The app stopped reading just past the 256 KiB limit.
    assert sent <= 256 * 1024 + 2 * len(chunk)


async def test_not_json_is_415(client: httpx.AsyncClient) -> None:
    body, headers = sign_event(circle_event())
    headers["content-type"] = "text/plain"
    response = await client.post("/webhooks/north", content=body, headers=headers)
    assert response.status_code == 415
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_schema_errors_are_422_and_do_not_echo_input(client: httpx.AsyncClient) -> None:
    event = task_event(category="diagnosis: dementia", people_needed=0)
    response = await post_event(client, event)
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"].startswith(PROBLEM)
    fields = {tuple(error["loc"])[-1] for error in problem["errors"]}
    assert {"category", "people_needed"} <= fields
    assert "dementia" not in response.text


async def test_a_members_calendar_url_on_a_private_address_is_422(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """carecal must not become a way into the municipality's own network: a member's own
    CalDAV URL on a loopback or private address is refused before anything is recorded
    (names are resolved and checked again before each sync)."""
    anna = {"id": "m-anna", "name": "Anna", "role": "relative", "visibility": "full",
            "calendar": "external",
            "external": {"url": "http://169.254.169.254/latest/", "username": "anna",
                         "password": "app-password"}}  # fmt: skip
    response = await post_event(client, circle_event(1, [anna]))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert [e["loc"] for e in problem["errors"]] == [["data", "members", 0, "external", "url"]]
    assert "169.254" not in response.text and "app-password" not in response.text
    async with store.transaction() as tx:
        assert await tx.get_circle("north", "c-123") is None
    anna["external"]["url"] = "https://dav.example.org/anna/"  # type: ignore[index]
    assert (await post_event(client, circle_event(1, [anna]))).status_code == 202


async def test_unknown_event_type_is_422(client: httpx.AsyncClient) -> None:
    response = await post_event(client, {"type": "task.exploded", "data": {}})
    assert response.status_code == 422


async def test_rejections_are_counted_by_reason(client: httpx.AsyncClient) -> None:
    await post_event(client, circle_event(), tenant="atlantis")
    await post_event(client, circle_event(), secret=SOUTH_SECRET)
    await post_event(client, circle_event())
    await client.get("/api/v1/circles/c-123", headers=auth())  # applied
    metrics = (await client.get("/metrics")).text
    assert 'carecal_webhooks_rejected_total{reason="unknown_tenant"} 1.0' in metrics
    assert 'carecal_webhooks_applied_total{outcome="applied",type="circle.updated"} 1.0' in metrics
    assert 'carecal_inbox{status="applied"} 1.0' in metrics
    assert 'carecal_webhooks_rejected_total{reason="bad_signature"} 1.0' in metrics
    assert 'type="circle.updated"' in metrics


async def test_circle_update_removes_absent_members_and_queues_withdrawal(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    await post_event(client, circle_event(version=1))
    without_bo = circle_event(version=2)
    without_bo["data"]["members"] = [m for m in without_bo["data"]["members"] if m["id"] != "m-bo"]
    assert (await post_event(client, without_bo)).status_code == 202
    circle = (await client.get("/api/v1/circles/c-123", headers=auth())).json()
    assert [m["id"] for m in circle["members"]] == ["m-anna", "m-sara"]
    jobs = await store.lease_jobs("test", now=FIXED_NOW, limit=50, lease_seconds=60)
    withdrawals = [j.payload for j in jobs if j.kind == "member.withdraw"]
    assert withdrawals == [{"citizen_id": "c-123", "member_id": "m-bo"}]


async def test_a_removal_is_never_folded_into_a_waiting_cleanup_of_a_left_calendar(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    """Anna moves to another account of her own (the old one's copy is to go, its job
    waiting), then is removed: the removal is a job of its own. Folded into the waiting one
    (one kind, one key), it only cleaned the old account: her copies in the new one stayed,
    and so did her password."""

    def anna(url: str) -> dict[str, Any]:
        return {"id": "m-anna", "name": "Anna", "role": "relative", "visibility": "full",
                "calendar": "external",
                "external": {"url": url, "username": "anna", "password": "app-pw"}}  # fmt: skip

    bo = {"id": "m-bo", "name": "Bo", "role": "relative", "visibility": "full",
          "calendar": "feed"}  # fmt: skip
    for version, members in enumerate(
        [
            [anna("https://old.example.org/anna/"), bo],
            [anna("https://new.example.net/a/"), bo],
            [bo],
        ],
        start=1,
    ):
        assert (await post_event(client, circle_event(version, members))).status_code == 202
    await client.get("/api/v1/circles/c-123", headers=auth())  # applied
    jobs = []  # one job of a key at a time
    while leased := await store.lease_jobs("test", now=FIXED_NOW, limit=50, lease_seconds=60):
        for job in leased:
            await store.finish_job(job.id, "test")
        jobs += leased
    withdrawals = sorted((j.kind, j.key, dict(j.payload)) for j in jobs if j.kind != "view.sync")
    payload = {"citizen_id": "c-123", "member_id": "m-anna"}
    assert withdrawals == [
        ("member.left_account", "c-123:m-anna", payload),
        ("member.withdraw", "c-123:m-anna", payload),
    ]


async def test_circle_and_task_changes_queue_a_sync_of_each_hosted_view(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    # Anna and Sara are hosted, Bo reads a feed: two views, one job each however many changes.
    assert (await post_event(client, circle_event(version=1))).status_code == 202
    assert (await post_event(client, task_event(version=1))).status_code == 202
    assert (await post_event(client, task_event(version=2, people_needed=1))).status_code == 202
    await client.get("/api/v1/circles/c-123", headers=auth())  # the inbox is applied by now
    jobs = await store.lease_jobs("test", now=FIXED_NOW, limit=50, lease_seconds=60)
    syncs = sorted((j.key, dict(j.payload)) for j in jobs if j.kind == "view.sync")
    assert syncs == [
        ("c-123:m-anna", {"member_id": "m-anna", "citizen_id": "c-123", "reason": "changed"}),
        ("c-123:m-sara", {"member_id": "m-sara", "citizen_id": "c-123", "reason": "changed"}),
    ]


async def test_a_database_outage_is_503_and_nothing_is_accepted(tmp_path: Path) -> None:
    store = MemoryStore()  # the store's outage switch; no database involved
    app = create_app(make_settings(tmp_path), store=store)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            body, headers = sign_event(circle_event(), msg_id="msg_outage")
            store.unavailable = True
            down = await c.post("/webhooks/north", content=body, headers=headers)
            assert down.status_code == 503
            assert down.headers["retry-after"] == "5"
            assert down.headers["content-type"].startswith(PROBLEM)
            store.unavailable = False
            # The host's retry of the same id is new, not a duplicate: it was never recorded.
            again = await c.post("/webhooks/north", content=body, headers=headers)
            assert again.status_code == 202


async def test_the_direct_webhook_path_keeps_the_routes_contract(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """`POST /webhooks/{tenant}` skips the router (webhooks.DirectWebhooks); everything else
    about the route is as the router answers it: the request id, the access log naming the
    template (never the tenant's path), 405 for other methods, 404 for other paths."""
    caplog.set_level(logging.INFO, logger="carecal.access")
    body, headers = sign_event(circle_event())
    accepted = await client.post(
        "/webhooks/north", content=body, headers=headers | {"x-request-id": "req-direct-1"}
    )
    assert accepted.status_code == 202 and accepted.headers["x-request-id"] == "req-direct-1"
    lines = [r for r in caplog.records if r.name == "carecal.access"]
    assert [(r.route, r.status) for r in lines] == [("/webhooks/{tenant}", 202)]  # type: ignore[attr-defined]
    wrong_method = await client.get("/webhooks/north")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.headers["content-type"] == PROBLEM
    for path in ("/webhooks/", "/webhooks/north/extra", "/webhooksnorth"):
        missing = await client.post(path, content=body, headers=headers)
        assert missing.status_code == 404, path
        assert missing.headers["content-type"] == PROBLEM
    unknown = await client.post("/webhooks/nowhere", content=body, headers=headers)
    assert unknown.status_code == 404 and unknown.json()["reason"] == "unknown_tenant"


async def test_the_access_log_names_a_mounted_route_whole(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Routes under a mount (`/api/v1`) are named with it, and without their converters:
    `/circles/{citizen_id:id}` alone was ambiguous."""
    caplog.set_level(logging.INFO, logger="carecal.access")
    assert (await client.get("/api/v1/circles/c-404", headers=auth())).status_code == 404
    assert (await client.get("/healthz")).status_code == 200
    lines = [r for r in caplog.records if r.name == "carecal.access"]
    assert [r.route for r in lines] == ["/api/v1/circles/{citizen_id}", "/healthz"]  # type: ignore[attr-defined]


async def test_a_failure_to_apply_logs_no_care_data(
    client: httpx.AsyncClient, store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The database refuses a task (a trigger or a constraint stands in for a statement
    timeout, a failover, a full disk, a bug): the entry is marked failed and logged with its
    error, and the log holds neither the task's details nor anything else the statement
    bound, nor what PostgreSQL says the refused row held."""
    details = "Insulin kl. 8; demens, må ikke være alene"
    async with store.engine.begin() as connection:
        if store.engine.dialect.name == "sqlite":
            await connection.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON tasks "
                "BEGIN SELECT RAISE(ABORT, 'refused by the database'); END"
            ))  # fmt: skip
        else:
            # PostgreSQL says what a refused row held ("Failing row contains (…)")
            await connection.execute(
                text("ALTER TABLE tasks ADD CONSTRAINT refuse CHECK (people_needed < 0) NOT VALID")
            )
    caplog.set_level(logging.INFO)
    assert (await post_event(client, circle_event())).status_code == 202
    assert (await post_event(client, task_event(details=details))).status_code == 202
    assert (await client.get("/api/v1/tasks/t-1", headers=auth())).status_code == 404
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.name == "plugin.services.ingest"]
    [failed] = [line for line in lines if "could not be applied" in line]
    assert "refused by the database" in failed or "violates check constraint" in failed
    assert "Insulin" not in failed and "shopping" not in failed and "Netto" not in failed


def test_a_store_error_says_what_the_driver_said_never_what_was_bound() -> None:
    """PostgreSQL binds a webhook's body as bytes: a connection lost while recording it put
    the body (a member's own calendar password, the citizen's name) into the error's text."""
    from asyncpg.exceptions import CheckViolationError
    from sqlalchemy import exc as sa_exc

    from adapters.store.sql_tx import translate_errors
    from plugin.services.ports import Conflict, StoreError, StoreUnavailable

    body = b'{"data": {"citizen": {"display_name": "Fru Jensen"}, "password": "hunter2"}}'
    error = sa_exc.OperationalError(
        "INSERT INTO inbox (body) VALUES ($1::BYTEA)",
        (body,),
        ConnectionError("connection was closed in the middle of operation"),
    )
    with pytest.raises(StoreUnavailable) as caught:
        with translate_errors():
            raise error
    chain = f"{caught.value} {caught.value.__cause__!r} {caught.value.__context__!r}"
    assert "connection was closed" in str(caught.value)
    assert "hunter2" not in chain and "Fru Jensen" not in chain
    assert caught.value.__suppress_context__  # a log's traceback shows no chain either

    # asyncpg's text of a refused row ends in PostgreSQL's DETAIL: the row's values
    refused = CheckViolationError('new row for relation "tasks" violates check constraint')
    refused.detail = "Failing row contains (north, t-1, Insulin kl. 8)"
    assert "Insulin" in str(refused)
    with pytest.raises(Conflict) as conflict:
        with translate_errors():
            raise sa_exc.IntegrityError("INSERT INTO tasks …", ("Insulin kl. 8",), refused)
    assert str(conflict.value) == (
        'CheckViolationError: new row for relation "tasks" violates check constraint'
    )
    assert conflict.value.__suppress_context__

    # what follows a colon is a value, whoever says it (asyncpg of an executemany, PostgreSQL)
    for said in (
        "invalid input for query argument $1 in element #0 of executemany() sequence: "
        "'Insulin 5 IE'",
        'invalid input syntax for type integer: "Insulin 5 IE"',
    ):
        with pytest.raises(StoreError) as typed:
            with translate_errors():
                raise sa_exc.DataError("INSERT …", (), Exception(said))
        assert "Insulin" not in str(typed.value) and str(typed.value).startswith("Exception: ")


async def test_every_rejection_is_titled_as_its_status_and_says_its_reason(
    client: httpx.AsyncClient,
) -> None:
    """RFC 9457: with `type` about:blank, the title is the status phrase; what went wrong is
    the `detail`, and `reason` tells the cases apart for the host's code."""
    body, headers = sign_event(circle_event())
    stale_body, stale = sign_event(circle_event(), timestamp=int(time.time()) - 3600)
    malformed, malformed_headers = b"{", dict(headers)
    malformed_headers["webhook-signature"] = sign(
        NORTH_SECRET, headers["webhook-id"], int(headers["webhook-timestamp"]), malformed
    )
    cases = [
        ("/webhooks/nowhere", body, headers, 404, "unknown_tenant"),
        ("/webhooks/north", body, headers | {"content-type": "text/plain"}, 415,
         "unsupported_media_type"),
        ("/webhooks/north", b" " * 300_000, headers, 413, "too_large"),
        ("/webhooks/north", stale_body, stale, 401, "stale"),
        ("/webhooks/north", body + b" ", headers, 401, "bad_signature"),
        ("/webhooks/north", malformed, malformed_headers, 400, "malformed_json"),
    ]  # fmt: skip
    for path, content, sent, status, reason in cases:
        answer = await client.post(path, content=content, headers=sent)
        problem = answer.json()
        assert (answer.status_code, problem["title"], problem["reason"]) == (
            status, HTTPStatus(status).phrase, reason
        ), reason  # fmt: skip
        assert problem["detail"] and problem["type"] == "about:blank", reason
    assert (await client.post("/webhooks/north", content=b" " * 300_000, headers=headers)).json()[
        "max_bytes"
    ] == 256 * 1024

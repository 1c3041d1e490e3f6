"""`make demo`'s seed: the shipped configuration with a database of its own, seeded as
`carecal demo` seeds it, and the banner a newcomer reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin.config import load_settings
from plugin.demo import DEMO_CITIZEN, seed_demo
from plugin.web.app import open_store


async def test_the_demo_seeds_its_circle_and_says_how_to_reach_annas_calendar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    settings = load_settings("config/carecal.toml", environ={"CARECAL_DATABASE__URL": database})
    await seed_demo(settings)
    banner = capsys.readouterr().err
    tenant = settings.tenants[0]
    assert "/api/v1/members/m-anna/calendar-credentials" in banner
    assert f"Bearer {tenant.api_token.get_secret_value()}" in banner
    store = await open_store(settings, migrate=False)
    try:
        async with store.transaction() as tx:
            circle = await tx.get_circle(tenant.id, DEMO_CITIZEN)
            task = await tx.get_task(tenant.id, "demo-shopping")
    finally:
        await store.close()
    assert circle is not None and [m.id for m in circle.members] == ["m-anna", "m-bo", "m-sara"]
    assert task is not None

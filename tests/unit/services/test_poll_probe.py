"""A poll's probe travels to the view's sync in the job's payload (JSON), and a payload that
does not hold a well-formed probe gives none: the sync then reads the collection itself."""

from __future__ import annotations

import json

from plugin.services.calendar_port import Probe
from plugin.services.view_sync import probe_of_job, probe_payload


def test_a_probe_survives_the_job_payload() -> None:
    for probe in (
        Probe("http://x/sync/7", '"ctag"', "Fru Jensen \N{EN DASH} omsorg"),
        Probe(None, '"ctag"', None),
        Probe("tok", None),
    ):
        payload = json.loads(json.dumps({"member_id": "m-anna", "probe": probe_payload(probe)}))
        assert probe_of_job(payload) == probe


def test_no_probe_or_a_malformed_one_gives_none() -> None:
    assert probe_payload(None) == {}
    assert probe_of_job({"member_id": "m-anna"}) is None
    assert probe_of_job({"probe": {}}) is None
    assert probe_of_job({"probe": "tok"}) is None
    assert probe_of_job({"probe": {"sync_token": 7, "ctag": None}}) is None

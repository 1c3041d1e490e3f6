"""Smoke test of `bench.webhooks`: the generator drives the bare app and the figures are
computed. No figure is asserted: a benchmark is not a test, and this machine is not that one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.loadgen import chunked_end, summarize
from bench.webhooks import main


@pytest.mark.slow
def test_a_short_run_against_the_bare_app_completes_with_202(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figures.json"
    argv = ["--only", "bare", "--concurrency", "4", "--duration", "1", "--warmup", "0.2"]
    exit_code = main([*argv, "--pool", "2000", "--json", str(out)])

    assert exit_code == 0
    bare = json.loads(out.read_text())["results"]["bare"]
    assert bare["completed"] > 0
    assert bare["statuses"] == {"202": bare["completed"]}
    assert bare["errors"] == {}
    assert bare["requests_per_second"] == pytest.approx(bare["completed"] / 1.0)
    latency = bare["latency"]
    assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert "bare" in capsys.readouterr().out


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    stats = summarize([n * 1_000_000 for n in range(1, 101)])

    assert (stats.p50_ms, stats.p90_ms, stats.p99_ms, stats.max_ms) == (50, 90, 99, 100)
    assert stats.mean_ms == pytest.approx(50.5)


def test_a_chunked_body_ends_after_the_last_chunk() -> None:
    body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n"

    assert chunked_end(body + b"HTTP/1.1 202", 0) == len(body)
    assert chunked_end(body[:-1], 0) == -1
    assert chunked_end(body[:7], 0) == -1

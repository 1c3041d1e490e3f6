"""Sustained signed-webhook ingestion: carecal against a bare Starlette endpoint.

    .venv/bin/python -m bench.webhooks [--concurrency 200] [--duration 15] [--warmup 3]
                                       [--json out.json] [--only bare|carecal]

Both targets get the same prebuilt requests from the same load generator, served by the same
uvicorn, one after the other on the same port. Prints requests/s and latency percentiles of
each, their throughput ratio and whether the issue's targets were met. A benchmark, not a
test: it exits 0 whatever the figures, and non-zero only when the measurement itself is
worthless (a target did not start, or more than 1% of answers were not 202).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import payloads
from bench.loadgen import LoadResult, run_load_sync
from bench.servers import (
    Server,
    ServerFailed,
    free_port,
    machine_busy_seconds,
    request,
    serve,
)

# What one target run answers: its figures and which uvloop/httptools its process loaded.
Measured = tuple[LoadResult, dict[str, bool]]

HOST = "127.0.0.1"
TENANT = "bench"
CITIZEN = "c-1"
REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.40
TARGET_P99_MS = 50.0
MAX_NOT_ACCEPTED = 0.01


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhooks", description="Webhook ingestion: carecal vs bare Starlette."
    )
    parser.add_argument("--concurrency", type=int, default=200, help="open connections (200)")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds (15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (3)")
    parser.add_argument(
        "--pool", type=int, default=200_000, help="prebuilt signed requests (200000)"
    )
    parser.add_argument("--only", choices=["bare", "carecal"], help="run one target")
    parser.add_argument(
        "--drain",
        type=float,
        default=600.0,
        help="seconds to wait for carecal's backlog to be applied after the load (600; 0: "
        "do not wait)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (logs, database)"
    )
    return parser.parse_args(argv)


def uvicorn_auto() -> dict[str, str]:
    """What uvicorn's `auto` loop and http settings pick in this environment."""
    has = {name: importlib.util.find_spec(name) is not None for name in ("uvloop", "httptools")}
    return {
        "loop": "uvloop" if has["uvloop"] else "asyncio",
        "http": "httptools" if has["httptools"] else "h11",
    }


def machine_facts() -> dict[str, Any]:
    import uvicorn

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "uvicorn": uvicorn.__version__,
        "uvicorn_auto": uvicorn_auto(),
    }


def carecal_command() -> list[str] | None:
    """`carecal serve`; through `python -m plugin.cli` (the same `main`) when the console
    script is not installed yet, or None when there is no CLI at all. The config file is
    passed as `CARECAL_CONFIG`, which does not depend on where `--config` goes."""
    script = Path(sys.executable).parent / "carecal"
    if script.exists():
        return [str(script), "serve"]
    if importlib.util.find_spec("plugin.cli") is not None:
        return [sys.executable, "-m", "plugin.cli", "serve"]
    return None


def write_config(folder: Path, port: int, secret: str) -> Path:
    config = folder / "carecal.toml"
    config.write_text(
        f"""[server]
host = "{HOST}"
port = {port}
public_url = "http://{HOST}:{port}"

[database]
url = "sqlite+aiosqlite:///{folder / "carecal.db"}"

[calendar]
type = "embedded"
folder = "{folder / "dav"}"

[logging]
level = "WARNING"

[[tenants]]
id = "{TENANT}"
webhook_secret = "{secret}"
api_token = "{secrets.token_urlsafe(24)}"
""",
        encoding="utf-8",
    )
    return config


def seed_circle(server: Server, secret: str) -> None:
    """The circle the tasks belong to, sent before the clock starts."""
    body = json.dumps(payloads.circle_event(CITIZEN)).encode()
    msg_id, timestamp = f"msg_circle_{secrets.token_hex(4)}", int(time.time())
    status, answer = request(
        server.host,
        server.port,
        "POST",
        f"/webhooks/{TENANT}",
        body,
        {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": payloads.sign(secret, msg_id, timestamp, body),
        },
    )
    if status != 202:
        raise ServerFailed(f"circle.updated answered {status}: {answer[:500]!r}")


def measure(server: Server, pool: list[bytes], args: argparse.Namespace) -> LoadResult:
    print(f"  {server.name}: {args.warmup:g} s warm-up + {args.duration:g} s ...", flush=True)
    result = run_load_sync(
        server.host,
        server.port,
        pool,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        cpu_probes={"server": server.cpu_seconds, "machine": machine_busy_seconds},
    )
    share = result.share_not(202)
    if share > MAX_NOT_ACCEPTED:
        detail = result.first_unexpected or b""
        raise ServerFailed(
            f"{share:.1%} of answers were not 202 (statuses {result.statuses}, "
            f"errors {result.errors}); first unexpected response:\n"
            f"{detail.decode(errors='replace')}"
        )
    return result


def _row(name: str, r: LoadResult) -> str:
    lat = r.latency
    not_ok = r.completed - r.statuses.get(202, 0)
    errors = sum(r.errors.values())
    share = cpu_shares(r)
    return (
        f"{name:<8} {r.requests_per_second:>9.0f} {lat.p50_ms:>7.1f} {lat.p90_ms:>7.1f} "
        f"{lat.p99_ms:>7.1f} {lat.max_ms:>7.1f} {not_ok:>7} {errors:>6} "
        f"{share['server']:>6.0%} {share['client']:>6.0%} {share['other']:>6.0%}"
    )


def cpu_shares(r: LoadResult) -> dict[str, float]:
    """CPU over the window as a share of one core; `other` is everyone else on the machine."""
    seconds = r.cpu_seconds
    server, client = seconds.get("server", 0.0), seconds["client"]
    other = max(0.0, seconds.get("machine", 0.0) - server - client)
    return {
        k: v / r.window_seconds
        for k, v in (("server", server), ("client", client), ("other", other))
    }


def report(results: dict[str, LoadResult], concurrency: int) -> dict[str, Any]:
    print()
    print(
        f"{'target':<8} {'req/s':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'non-202':>7} {'errors':>6} {'server':>6} {'client':>6} {'other':>6}"
    )
    for name, result in results.items():
        print(_row(name, result))
        if result.statuses.keys() - {202} or result.errors:
            print(f"         statuses {result.statuses}, errors {result.errors}")
        if result.pool_wrapped:
            print(
                f"         sent {result.requests_used} requests, more than the pool: "
                + ("harmless here" if name == "bare" else "repeats answer 200, raise --pool")
            )
    print(
        "         server/client/other = CPU over the window, 100% = one core; "
        "other = the rest of the machine"
    )
    busy = max((cpu_shares(r)["other"] for r in results.values()), default=0.0)
    if busy > 0.10:
        print(
            f"         note: other processes used up to {busy:.0%} of a core during a run; "
            "the figures are depressed and noisy"
        )
    verdicts: dict[str, Any] = {}
    if "bare" in results and "carecal" in results:
        ratio = results["carecal"].requests_per_second / results["bare"].requests_per_second
        met = ratio >= TARGET_RATIO
        print(
            f"\nratio carecal/bare throughput = {ratio:.2f} "
            f"(target >= {TARGET_RATIO:.2f}: {'met' if met else 'NOT met'})"
        )
        verdicts["ratio"] = {"value": ratio, "target": TARGET_RATIO, "met": met}
    if "carecal" in results:
        p99 = results["carecal"].latency.p99_ms
        met = p99 < TARGET_P99_MS
        print(
            f"carecal p99 = {p99:.1f} ms at {concurrency} concurrent "
            f"(target < {TARGET_P99_MS:.0f} ms: {'met' if met else 'NOT met'})"
        )
        verdicts["p99_ms"] = {"value": p99, "target": TARGET_P99_MS, "met": met}
    return verdicts


def measure_bare(folder: Path, port: int, pool: list[bytes], args: argparse.Namespace) -> Measured:
    argv = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", HOST]
    argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    with serve(
        "bare", argv, host=HOST, port=port, cwd=REPO, log_path=folder / "bare.log"
    ) as server:
        return measure(server, pool, args), server.loaded("uvloop", "httptools")


def measure_carecal(
    folder: Path, port: int, pool: list[bytes], args: argparse.Namespace, secret: str
) -> Measured | None:
    argv = carecal_command()
    if argv is None:
        return None
    with serve(
        "carecal",
        argv,
        host=HOST,
        port=port,
        cwd=folder,  # anything carecal writes beside its config stays in the temporary folder
        env={
            "CARECAL_CONFIG": str(write_config(folder, port, secret)),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        },
        log_path=folder / "carecal.log",
        health_path="/healthz",
    ) as server:
        libraries = server.loaded("uvloop", "httptools")
        seed_circle(server, secret)
        result = measure(server, pool, args)
        report_drain(server, args.drain)
        return result, libraries


def inbox_pending(server: Server) -> int:
    status, body = request(server.host, server.port, "GET", "/metrics", timeout=60)
    if status != 200:
        raise ServerFailed(f"/metrics answered {status}")
    for line in body.decode().splitlines():
        if line.startswith('carecal_inbox{status="pending"}'):
            return int(float(line.split()[-1]))
    raise ServerFailed("/metrics has no carecal_inbox gauge")


def report_drain(server: Server, limit_seconds: float = 600) -> None:
    """A 202 means recorded, not yet applied: say how long the applier took to catch up
    after the burst, so the sustainable rate is on the page too (nothing is asserted)."""
    if limit_seconds <= 0:
        return
    started = time.monotonic()
    backlog = inbox_pending(server)
    pending = backlog
    while pending and time.monotonic() - started < limit_seconds:
        time.sleep(0.5)
        pending = inbox_pending(server)
    took = time.monotonic() - started
    if backlog == 0:
        print("  carecal: the applier kept up; no backlog after the load", flush=True)
    elif pending:
        print(f"  carecal: {pending} of {backlog} still pending after {took:.0f} s", flush=True)
    else:
        print(
            f"  carecal: backlog of {backlog} applied in {took:.1f} s after the load "
            f"(about {backlog / took:.0f} applied/s while idle)",
            flush=True,
        )


def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """Measure the targets one after the other; answers the figures and the failures."""
    facts = machine_facts()
    auto = facts["uvicorn_auto"]
    print(
        f"machine: {facts['cores']} cores, Python {facts['python']}, uvicorn {facts['uvicorn']} "
        f"(auto picks loop={auto['loop']}, http={auto['http']}), {facts['platform']}"
    )
    print(
        f"settings: concurrency {args.concurrency}, warm-up {args.warmup:g} s, "
        f"duration {args.duration:g} s, pool {args.pool} requests, SQLite, single worker"
    )
    results: dict[str, LoadResult] = {}
    libraries: dict[str, dict[str, bool]] = {}
    failures: dict[str, str] = {}
    scratch: AbstractContextManager[str] = (
        nullcontext(tempfile.mkdtemp(prefix="carecal-bench-"))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="carecal-bench-")
    )
    with scratch as tmp:
        folder = Path(tmp)
        if args.keep:
            print(f"keeping config, database, calendars and server logs in {folder}")
        # One port for both targets (one after the other), so the prebuilt Host header fits.
        port = free_port(HOST)
        secret = payloads.new_webhook_secret()
        started = time.perf_counter()
        pool = payloads.task_requests(
            args.pool, authority=f"{HOST}:{port}", tenant=TENANT, secret=secret
        )
        body = len(pool[0]) - pool[0].index(b"\r\n\r\n") - 4
        print(
            f"prebuilt {len(pool)} signed requests ({body} byte bodies) "
            f"in {time.perf_counter() - started:.1f} s"
        )
        targets: dict[str, Callable[[], Measured | None]] = {
            "bare": lambda: measure_bare(folder, port, pool, args),
            "carecal": lambda: measure_carecal(folder, port, pool, args, secret),
        }
        for name, measure_target in targets.items():
            if args.only not in (None, name):
                continue
            try:
                measured = measure_target()
            except ServerFailed as exc:
                failures[name] = str(exc)
                print(f"  {name}: FAILED, see below", flush=True)
                continue
            if measured is None:
                print(f"  {name}: `carecal serve` is not available yet (no plugin.cli); skipped")
                continue
            results[name], libraries[name] = measured

    for name, libs in libraries.items():
        print(
            f"  {name} process has loaded: "
            + ", ".join(f"{lib} {'yes' if on else 'no'}" for lib, on in libs.items())
        )
    verdicts = report(results, args.concurrency)
    figures = {
        "machine": facts,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "server_libraries": libraries,
        "results": {
            name: {
                **asdict(r),
                "requests_per_second": r.requests_per_second,
                "first_unexpected": None,
            }
            for name, r in results.items()
        },
        "targets": verdicts,
        "failures": failures,
    }
    return figures, failures


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    figures, failures = run(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    for name, message in failures.items():
        print(
            f"\n{name}: not measured, the figures would be meaningless: {message}", file=sys.stderr
        )
    # Only a broken measurement fails; missed targets are information, not errors.
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""The signup API under open-loop load, with the whole system running and the broker up,
cut and hanging (through a loopback proxy); then the highest rate whose p99 stays in bound.

``python bench/signup.py [--rate R] [--duration S] [--sweep 100,150,...] [--json FILE]``

What runs: everything ``make run`` starts (infra/run.py: the signup API under uvicorn,
each service's worker, reports' beat, the signup outbox relay, a Flower per service)
against the real RabbitMQ and PostgreSQL (a private vhost and database, removed
afterwards), the SMS gateway stub (its own process) and an SMTP sink. The signup API and
its outbox relay reach RabbitMQ through a loopback proxy (infra/tcp_proxy.py), which the
"cut" and "hang" rows switch; the workers reach it directly.

Each row sends signups (with a phone number, so each one texts a code) at a fixed rate
for ``--duration`` seconds from a separate process (bench/openloop.py): a request leaves
at its scheduled time whether or not earlier ones were answered, and its latency counts
from that time, so queueing shows. Each row is a dict (``--json``): rate, p50/p99/max,
answered, errors, the generator's own lag, the outbox left unsent when the row ended and
how long it took to drain once the broker was back, and the welcome e-mails delivered.
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import cpu_seconds  # noqa: E402
from infra.processes import ROOT, free_port, wait_for  # noqa: E402
from infra.run import programs  # noqa: E402
from infra.supervisor import Supervisor  # noqa: E402
from infra.tcp_proxy import TcpProxy  # noqa: E402
from shared.ops.deployments import WORKERS  # noqa: E402
from tests.conftest import build_stack  # noqa: E402
from tests.infra import servers  # noqa: E402

PHASES = ("up", "cut", "hang")
P99_BOUND_MS = 25.0

#: Events each subscriber consumes per signup: the notifier user.signed_up (its welcome
#: e-mail and admin notice run inside that one event's task); reports user.signed_up and
#: the two notification.sent. The relay publishes one outbox row per signup.
EVENTS_PER_SIGNUP = {"notifier-worker": 1, "reports-worker": 3, "signup-outbox-relay": 1}
#: The issue's targets, ms of CPU: per signup (API, whole system), per event (each
#: subscriber) and per outbox row (relay); ``per_signup`` turns them all per signup.
CPU_TARGETS_MS = {"signup-api": 1.5, "signup-outbox-relay": 0.5, "notifier-worker": 2.0,
                  "reports-worker": 2.0, "whole system": 8.0}  # fmt: skip


def per_signup(targets: dict[str, float]) -> dict[str, float]:
    """Each target in ms of CPU per signup (a per-event target times the events a signup
    gives that process kind)."""
    return {kind: ms * EVENTS_PER_SIGNUP.get(kind, 1) for kind, ms in targets.items()}


#: The processes a profile is taken of (one flame graph each): those a signup runs through.
PROFILED = ("signup-api", "signup-outbox-relay", "notifier-worker", "reports-worker")


def whole_system(
    stack: Any, amqp_url: str, sms_url: str, logs: Path, api_workers: int,
    events: bool = True, concurrency: str = "",
) -> Supervisor:  # fmt: skip
    """``make run``'s programs (infra/run.py) on the bench's vhost and database, as guest.
    ``events=False``: the workers without ``-E`` and no Flower (what Flower's task view
    costs); ``concurrency``: every worker's ``--concurrency`` instead of its deployment's."""
    ports = iter(free_port() for _ in range(16))
    args = argparse.Namespace(
        api_port=next(ports), smtp_port=stack.smtp.port, sms_port=0,
        flower_port=next(ports), metrics_port=next(ports), prometheus_port=next(ports),
    )  # fmt: skip
    # The stack's sink counts the e-mails; no Prometheus in a load test.
    skip = ("smtp-sink", "prometheus")
    found = [p for p in programs(args, logs) if p.name not in skip
             and (events or not p.name.endswith("-flower"))]  # fmt: skip
    for program in found:
        if program.name.endswith("-flower"):  # run.py numbers them up from flower_port
            program.argv[-2] = f"--port={free_port()}"
        # The signup service's processes reach the broker through the proxy the rows cut;
        # the others directly (a Python proxy carrying every worker's traffic, in the
        # bench's own process, would slow the whole system down, not the broker).
        through_proxy = program.name in ("signup-api", "signup-outbox-relay")
        program.env.update(
            AMQP_URL=amqp_url if through_proxy else stack.amqp_url,
            DATABASE_URL=stack.database_url,
            SMS_GATEWAY_URL=sms_url,
        )
        if program.name.endswith("-worker"):
            program.env["METRICS_PORT"] = str(free_port())
            if not events:
                program.argv.remove("-E")
            if concurrency:
                flag = next(a for a in program.argv if a in ("--concurrency", "--autoscale"))
                at = program.argv.index(flag)
                program.argv[at : at + 2] = ["--concurrency", concurrency]
        if program.name == "signup-api":
            program.argv += ["--log-level", "warning", "--workers", str(api_workers)]
    supervisor = Supervisor(found, logs, {**stack.env, "LOCAL_MODE": "1"}, restarts=20)
    supervisor.api = f"http://127.0.0.1:{args.api_port}"  # type: ignore[attr-defined]
    return supervisor


def open_loop(base: str, rate: float, duration: float, run: str) -> dict[str, Any]:
    """One open-loop run of bench/openloop.py in its own process; its JSON result."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.openloop", base, "--rate", str(rate),
         "--duration", str(duration), "--run", run],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def program_cpu(system: Supervisor) -> dict[str, float]:
    """CPU seconds each running program (and its pool children) used so far."""
    return {p.name: cpu_seconds(p.proc.pid) for p in system.programs
            if p.proc is not None and p.proc.poll() is None}  # fmt: skip


def backend_cpu(engine: Any) -> float:
    """CPU seconds the PostgreSQL backends serving the bench's database used so far (the
    server is shared, so only the backends of this database count; RabbitMQ cannot be split
    by vhost and is left out)."""
    with engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        return sum(cpu_seconds(pid) for pid in pids)


def cpu_row(
    system: Supervisor, engine: Any, rate: float, duration: float, facts_per_signup: int,
    done: Any,
) -> dict[str, Any]:  # fmt: skip
    """Signups at ``rate`` for ``duration`` s, then until every one is delivered (welcome
    e-mail, outbox drained, ``facts_per_signup`` facts each in the reports read model):
    CPU ms per signup of each process kind and of the whole system (every program ``make
    run`` starts, the SMS stub and the load generator left out), PostgreSQL's backends for
    the bench's database beside them."""
    run = uuid.uuid4().hex[:8]
    before, db_before, facts_before = program_cpu(system), backend_cpu(engine), done.facts()
    result = open_loop(system.api, rate, duration, run)
    answered = result["answered"]
    wait_for(lambda: done.mails(run) >= answered and done.unsent() == 0
             and done.facts() - facts_before >= facts_per_signup * answered, 300, 0.1)  # fmt: skip
    after, db_after = program_cpu(system), backend_cpu(engine)
    per_kind: dict[str, float] = {}
    for name, seconds in after.items():
        kind = "flower" if name.endswith("-flower") else name
        per_kind[kind] = per_kind.get(kind, 0.0) + seconds - before.get(name, 0.0)
    ms = {kind: round(1000 * s / max(answered, 1), 2) for kind, s in sorted(per_kind.items())}
    ms["whole system"] = round(sum(ms.values()), 2)
    ms["postgresql backends"] = round(1000 * (db_after - db_before) / max(answered, 1), 2)
    per_event = {kind: round(ms[kind] / n, 2) for kind, n in EVENTS_PER_SIGNUP.items()
                 if kind in ms}  # fmt: skip
    return {"row": f"CPU per signup at {rate:g}/s", "rate": rate, "answered": answered,
            "p99_ms": result["p99_ms"], "cpu_ms_per_signup": ms, "cpu_ms_per_event": per_event,
            "targets_ms": per_signup(CPU_TARGETS_MS), "run": run}  # fmt: skip


def profile(
    system: Supervisor, rate: float, duration: float, out: Path, raw: bool = False
) -> list[Path]:
    """One py-spy flame graph per process kind a signup runs through (``PROFILED``), while
    signups arrive at ``rate``: ``out/flame-<program>.svg`` (``raw``: collapsed stacks,
    ``.txt``). Only samples of the thread holding the GIL count (``--gil``): py-spy cannot
    tell a thread waiting on a socket from one running here, and without it the graphs
    show mostly waiting. Sampling is non-blocking, and this row is apart from the CPU row,
    so the profiler's own cost is in neither figure."""
    out.mkdir(parents=True, exist_ok=True)
    spies, graphs = [], []
    for program in system.programs:
        if program.name not in PROFILED or program.proc is None:
            continue
        graph = out / f"flame-{program.name}.{'txt' if raw else 'svg'}"
        spies.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(program.proc.pid),
             "--subprocesses", "--gil", "--nonblocking", "--rate", "97", "--duration",
             str(int(duration) + 2), "--output", str(graph),
             "--format", "raw" if raw else "flamegraph"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        graphs.append(graph)
    time.sleep(1)  # py-spy attached
    open_loop(system.api, rate, duration, uuid.uuid4().hex[:8])
    for spy in spies:
        spy.wait(duration + 120)
    return [g for g in graphs if g.exists()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="signups/s in each broker row")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per row")
    parser.add_argument("--sweep", default="25,50,100,150,200,300", help="rates, broker up")
    parser.add_argument("--sweep-duration", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn processes")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to await e-mails")
    parser.add_argument("--json", type=Path, help="write the rows here (a list of dicts)")
    parser.add_argument("--cpu-rate", type=float, default=100.0, help="signups/s, CPU row")
    parser.add_argument("--cpu-duration", type=float, default=10.0, help="seconds, CPU row")
    parser.add_argument("--profile", type=Path, help="flame graphs (py-spy) into this folder")
    parser.add_argument("--raw", action="store_true", help="collapsed stacks, not SVG")
    parser.add_argument("--only-cpu", action="store_true", help="the CPU row (and profile) only")
    parser.add_argument("--no-events", action="store_true", help="workers without -E, no Flower")
    parser.add_argument("--concurrency", default="", help="every worker's --concurrency")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # cleanup runs: vhost, database
    logs = Path(tempfile.mkdtemp(prefix="bench-signup-"))
    rows: list[dict[str, Any]] = []
    with ExitStack() as cleanup:
        stack = build_stack(servers(cleanup), cleanup, logs)
        sms_port = free_port()  # the stub in its own process, as an outside gateway is
        gateway = subprocess.Popen([sys.executable, "-m", "infra.sms_gateway", "--port",
                                    str(sms_port)], cwd=ROOT)  # fmt: skip
        cleanup.callback(gateway.wait, 10)
        cleanup.callback(gateway.terminate)
        sms_url = f"http://127.0.0.1:{sms_port}"
        wait_for(lambda: _answers(f"{sms_url}/messages"), timeout=30)
        proxy = TcpProxy.to(stack.amqp_url).start()
        cleanup.callback(proxy.stop)
        system = whole_system(stack, proxy.url(stack.amqp_url), sms_url, logs, args.api_workers,
                              not args.no_events, args.concurrency)  # fmt: skip
        print(f"signup bench: starting the whole system (logs in {logs})", flush=True)
        system.start()
        cleanup.callback(system.stop, 20.0)
        worker_logs = [logs / f"{s}-worker.log" for s in WORKERS]
        wait_for(lambda: all(p.exists() and b" ready." in p.read_bytes() for p in worker_logs)
                 and _healthy(system.api), timeout=120)  # fmt: skip
        engine = create_engine(stack.database_url)
        cleanup.callback(engine.dispose)

        def unsent() -> int:
            with engine.connect() as c:
                return c.execute(
                    text("SELECT count(*) FROM signup.outbox WHERE published_at IS NULL")
                ).scalar()

        def mails(run: str) -> int:
            return sum(f"-{run}@" in to for m in stack.smtp.since(0) for to in m["to"])

        def facts() -> int:
            with engine.connect() as c:
                return c.execute(text("SELECT count(*) FROM reports.facts")).scalar()

        open_loop(system.api, 20, 2, "warmup")  # connections, first-use imports
        done = argparse.Namespace(mails=mails, unsent=unsent, facts=facts)
        wait_for(lambda: unsent() == 0 and facts() >= 3 * 40, 120, 0.1)  # the warm-up's
        row = cpu_row(system, engine, args.cpu_rate, args.cpu_duration, 3, done)
        rows.append(row)
        print(
            f"  {row['row']} (p99 {row['p99_ms']} ms), CPU ms per signup: "
            + ", ".join(f"{k} {v:g}" for k, v in row["cpu_ms_per_signup"].items())
            + "; per event or outbox row: "
            + ", ".join(f"{k} {v:g}" for k, v in row["cpu_ms_per_event"].items()),
            flush=True,
        )
        if args.profile:
            graphs = profile(system, args.cpu_rate, args.cpu_duration, args.profile, args.raw)
            print(f"  flame graphs: {', '.join(str(g) for g in graphs)}", flush=True)
        if args.only_cpu:
            args.sweep, phases = "", ()
        else:
            phases = PHASES
        print(
            f"open-loop signups with a phone, latency from each request's scheduled time;"
            f" p99 bound {P99_BOUND_MS:g} ms; {os.cpu_count()} cores",
            flush=True,
        )
        # The sweep first, lowest rate first: rows at rates beyond what the workers deliver
        # leave e-mails queued, and the workers draining them load the rows after.
        plan = [(f"sweep {r:g}/s", float(r), args.sweep_duration) for r in _rates(args.sweep)]
        plan += [(p, args.rate, args.duration) for p in phases]
        for name, rate, duration in plan:
            system.check()
            phase = name if name in PHASES else "up"
            print(f"  {name}: {rate:g} signups/s for {duration:g} s ...", flush=True)
            if phase != "up":
                getattr(proxy, phase)()
            run = uuid.uuid4().hex[:8]
            row = {"row": f"signup API, broker {name}", "api_workers": args.api_workers}
            row.update(open_loop(system.api, rate, duration, run), run=run)
            row["mails_during_run"] = mails(run)
            row["unsent_at_end"] = unsent()
            proxy.restore()
            restored = time.perf_counter()
            wait_for(lambda: unsent() == 0, timeout=120, interval=0.05)
            row["drained_s"] = round(time.perf_counter() - restored, 2)
            row["within_bound"] = bool(row["p99_ms"] is not None and row["p99_ms"] < P99_BOUND_MS)
            rows.append(row)
            print(f"  {_line(row)}", flush=True)
        print(f"waiting up to {args.settle:g} s for the welcome e-mails still queued ...")
        wanted = sum(r["answered"] for r in rows)
        with contextlib.suppress(AssertionError):  # reported below, not fatal
            wait_for(lambda: sum(mails(r["run"]) for r in rows) >= wanted, args.settle, 0.5)
        for row in rows:
            row["mails_delivered"] = mails(row["run"])
        print(f"e-mails delivered: {sum(r['mails_delivered'] for r in rows)} of {wanted} signups")
        swept = [r for r in rows if r["row"].startswith("signup API, broker sweep")]
        best = max((r["rate"] for r in swept if r["within_bound"] and not r["errors"]), default=0)
        print(f"highest swept rate with p99 < {P99_BOUND_MS:g} ms and no errors: {best:g}/s")
        rows.append({"row": "signup API, highest rate with p99 < 25 ms", "rate": best})
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
            print(f"rows written to {args.json}")
    return 0


def _rates(text_: str) -> list[float]:
    return [float(r) for r in text_.split(",") if r.strip()]


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['row']}: {row['rate']:g}/s p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms"
        f" max {row['max_ms']} ms, {row['answered']}/{row['requests']} answered,"
        f" {row['errors']} errors {row['error_kinds'] or ''}; generator lag p99"
        f" {row['lag_p99_ms']} ms; unsent at end {row['unsent_at_end']}, drained in"
        f" {row['drained_s']} s; e-mails delivered during the row {row['mails_during_run']}"
    )


def _healthy(base: str) -> bool:
    return _answers(f"{base}/readyz")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    sys.exit(main())

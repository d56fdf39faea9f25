"""CPU per signup of the signup API alone: the uvicorn process, under open-loop load.

``python -m bench.signup_api [--rate R] [--duration S] [--rounds N] [--tree DIR ...]``

Lighter than ``bench.signup --only-cpu`` (the whole system): only the API process runs
(uvicorn, as ``make run`` starts it), with the SMS gateway stub in its own process and
bench/openloop.py as the load, against a private vhost and database. Each row reads the
API process's CPU time from /proc before and after ``--duration`` s of signups at
``--rate``/s and after its after-commit thread has published them all (the outbox drained),
so the figure holds everything a signup costs the API: the request, the SMS call, the
transaction and the after-commit publish. No worker consumes the events: a confirmed
publish to an exchange without bindings costs the API what a bound one does.

``--tree`` names source trees to run the API from (default: this one); with several, the
rows alternate between them (A, B, A, B, ...) so that the machine's other load falls on
each alike, and the medians are compared.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import cpu_seconds  # noqa: E402
from bench.signup import _answers, open_loop  # noqa: E402
from infra.processes import ROOT, free_port, wait_for  # noqa: E402
from tests.conftest import build_stack  # noqa: E402
from tests.infra import servers  # noqa: E402


def start_api(tree: Path, env: dict[str, str], logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The API from ``tree`` (its own code imported), as infra/run.py starts it."""
    port = free_port()
    log = (logs / f"api-{tree.name}-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.signup.api:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--workers", "1"],
        cwd=tree, env={**env, "PYTHONPATH": str(tree)}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(f"{base}/readyz"), timeout=60)
    return proc, base


def one_row(
    tree: Path, env: dict[str, str], logs: Path, unsent: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """A fresh API process from ``tree``: warmed up, then ``rate`` x ``duration`` signups."""
    proc, base = start_api(tree, env, logs)
    try:
        open_loop(base, 20, 2, "warmup")
        wait_for(lambda: unsent() == 0, 60, 0.1)
        time.sleep(0.5)
        before = cpu_seconds(proc.pid)
        result = open_loop(base, args.rate, args.duration, uuid.uuid4().hex[:8])
        wait_for(lambda: unsent() == 0, 60, 0.05)
        used = cpu_seconds(proc.pid) - before
        if args.profile:
            profile(proc.pid, base, args)
    finally:
        proc.terminate()
        proc.wait(20)
    answered = result["answered"]
    return {
        "tree": str(tree), "answered": answered, "errors": result["error_kinds"],
        "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
        "cpu_ms_per_signup": round(1000 * used / max(answered, 1), 3),
    }  # fmt: skip


def profile(pid: int, base: str, args: argparse.Namespace) -> None:
    """py-spy's raw collapsed stacks (GIL samples) of the API under the same load."""
    out = args.profile / f"flame-api-{pid}.txt"
    args.profile.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--gil",
         "--nonblocking", "--rate", "97", "--duration", str(int(args.duration) + 2),
         "--output", str(out), "--format", "raw"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1)
    open_loop(base, args.rate, args.duration, uuid.uuid4().hex[:8])
    spy.wait(args.duration + 60)
    print(f"  profile: {out}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="signups/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--rounds", type=int, default=3, help="rows per tree")
    parser.add_argument("--tree", type=Path, action="append", help="source tree (repeatable)")
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks into this folder")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    logs = Path(tempfile.mkdtemp(prefix="bench-signup-api-"))
    rows: list[dict[str, Any]] = []
    with ExitStack() as cleanup:
        stack = build_stack(servers(cleanup), cleanup, logs)
        sms_port = free_port()
        gateway = subprocess.Popen(
            [sys.executable, "-m", "infra.sms_gateway", "--port", str(sms_port)], cwd=ROOT
        )
        cleanup.callback(gateway.wait, 10)
        cleanup.callback(gateway.terminate)
        sms_url = f"http://127.0.0.1:{sms_port}"
        wait_for(lambda: _answers(f"{sms_url}/messages"), timeout=30)
        env = {**stack.env, "SMS_GATEWAY_URL": sms_url, "LOCAL_MODE": "1"}
        env.pop("PYTHONPATH", None)
        engine = create_engine(stack.database_url)
        cleanup.callback(engine.dispose)

        def unsent() -> int:
            with engine.connect() as c:
                query = "SELECT count(*) FROM signup.outbox WHERE published_at IS NULL"
                return int(c.execute(text(query)).scalar() or 0)

        print(f"signup API alone, {args.rate:g} signups/s for {args.duration:g} s a row; "
              f"{os.cpu_count()} cores; logs in {logs}", flush=True)  # fmt: skip
        for _ in range(args.rounds):
            for tree in trees:
                row = one_row(tree, env, logs, unsent, args)
                rows.append(row)
                print(f"  {tree.name}: {row['cpu_ms_per_signup']} ms CPU/signup "
                      f"({row['answered']} answered, errors {row['errors']}, "
                      f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms)", flush=True)  # fmt: skip
        for tree in trees:
            figures = [r["cpu_ms_per_signup"] for r in rows if r["tree"] == str(tree)]
            print(f"{tree.name}: median {statistics.median(figures):.3f} ms CPU/signup "
                  f"over {figures}", flush=True)  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make run`: the whole system on this machine, in the foreground, until Ctrl-C.

Starts the SMTP sink and the SMS gateway stub, the signup API, each service's worker (the
deployments of ``python -m shared.ops workers``), reports' beat, the signup outbox relay
and a Flower per service (each service's control and event exchanges are its own, so one
Flower sees one service). Services run as their own broker user and database role (what
``topology apply`` created); Flower and the operator's URLs use the admin settings.

If any process exits, everything stops and the exit code is 1. Ctrl-C (or SIGTERM)
stops every process group: SIGTERM first (workers finish their current tasks), SIGKILL
for what is still there after ``--grace`` seconds.
"""

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from infra.processes import ROOT, wait_for
from infra.sms_gateway import SmsGateway
from shared.ops.deployments import WORKERS
from shared.permissions import CredentialSettings
from shared.settings import get_settings


@dataclass
class Program:
    """One long-running process in its own process group, its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self, base_env: dict[str, str], logs: Path, echo: bool) -> None:
        out = None if echo else open(logs / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env={**base_env, **self.env}, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)


def programs(args: argparse.Namespace) -> list[Program]:
    """Everything ``make run`` starts, each service with its own credentials."""
    settings, creds = get_settings(), CredentialSettings()
    py, celery = sys.executable, [sys.executable, "-m", "celery"]

    def as_service(name: str) -> dict[str, str]:
        return {
            "AMQP_URL": creds.amqp_url(name, settings.amqp_url),
            "DATABASE_URL": creds.database_url(name, settings.database_url),
        }

    mail = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(args.smtp_port)}
    sms = {"SMS_GATEWAY_URL": f"http://127.0.0.1:{args.sms_port}"}
    found = [
        Program("smtp-sink", [py, "-m", "infra.smtp_sink", "--port", str(args.smtp_port)]),
    ]
    for offset, deployment in enumerate(WORKERS.values()):
        env = {**as_service(deployment.service), **mail, **sms}
        env["METRICS_PORT"] = str(args.metrics_port + offset)
        found.append(
            Program(f"{deployment.service}-worker", [*celery, *deployment.argv(), "-E"], env)
        )
        found.append(
            Program(
                f"{deployment.service}-flower",
                [
                    *celery,
                    "-A",
                    f"services.{deployment.service}.app",
                    "flower",
                    f"--port={args.flower_port + offset}",
                    "--address=127.0.0.1",
                ],
            )  # fmt: skip
        )
    found.append(
        Program(
            "reports-beat",
            [*celery, "-A", "services.reports.app", "beat", "-l", "INFO"],
            as_service("reports"),
        )  # fmt: skip
    )
    if importlib.util.find_spec("services.signup.api"):
        found.append(
            Program(
                "signup-api",
                [
                    py,
                    "-m",
                    "uvicorn",
                    "services.signup.api:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(args.api_port),
                ],
                {**as_service("signup"), **sms},
            )  # fmt: skip
        )
    if importlib.util.find_spec("shared.outbox"):
        found.append(
            Program(
                "signup-outbox-relay",
                [py, "-m", "shared.outbox", "relay", "signup"],
                as_service("signup"),
            )  # fmt: skip
        )
    return found


def urls(args: argparse.Namespace, started: list[Program], logs: Path) -> str:
    management = urlsplit(get_settings().rabbitmq_management_url.split(";")[0])
    names = {p.name for p in started}
    lines = [
        f"signup API        http://127.0.0.1:{args.api_port}/docs"
        if "signup-api" in names
        else "signup API        (services/signup/api.py not there yet)",
        f"RabbitMQ UI       http://{management.hostname}:{management.port or 15672}"
        f" ({management.username or 'guest'}/{management.password or 'guest'})",
    ]
    for offset, service in enumerate(WORKERS):
        lines.append(f"Flower {service:<10} http://127.0.0.1:{args.flower_port + offset}")
    for offset, service in enumerate(WORKERS):
        lines.append(f"metrics {service:<9} http://127.0.0.1:{args.metrics_port + offset}/metrics")
    lines += [
        f"SMTP sink         127.0.0.1:{args.smtp_port} (mails are printed below)",
        f"SMS gateway stub  http://127.0.0.1:{args.sms_port}/messages",
        f"logs              {logs}",
        "ready: Ctrl-C stops everything",
    ]
    return "\n".join(lines)


def stop(started: list[Program], grace: float) -> None:
    for program in reversed(started):
        program.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for program in started:
        try:
            program.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            program.signal(signal.SIGKILL)
            program.proc.wait(10)


def run(args: argparse.Namespace) -> int:
    logs = Path(args.logs or tempfile.mkdtemp(prefix="eventful-run-"))
    logs.mkdir(parents=True, exist_ok=True)
    stopping: list[str] = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (&)
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    gateway = SmsGateway(port=args.sms_port).start()
    started = programs(args)
    try:
        for program in started:
            program.start(dict(os.environ), logs, echo=program.name == "smtp-sink")
        worker_logs = [logs / f"{s}-worker.log" for s in WORKERS]
        wait_for(lambda: all(p.exists() and b" ready." in p.read_bytes() for p in worker_logs)
                 or any(p.proc.poll() is not None for p in started) or stopping,
                 timeout=120)  # fmt: skip
        print(urls(args, started, logs), flush=True)
        while not stopping:
            if dead := [p for p in started if p.proc.poll() is not None]:
                print(f"{dead[0].name} exited ({dead[0].proc.returncode}); see {logs}", flush=True)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        print("stopping ...", flush=True)
        stop(started, args.grace)
        gateway.stop()
        print("stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.run", description=__doc__.split("\n")[0])
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--smtp-port", type=int, default=8025)
    parser.add_argument("--sms-port", type=int, default=8026)
    parser.add_argument("--flower-port", type=int, default=5555, help="first of one per service")
    parser.add_argument("--metrics-port", type=int, default=9101, help="first of one per worker")
    parser.add_argument("--grace", type=float, default=20.0, help="seconds before SIGKILL")
    parser.add_argument("--logs", help="directory for the processes' logs (default: a temp dir)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""`make run`: the whole system on this machine, in the foreground, until Ctrl-C.

Starts the SMTP sink and the SMS gateway stub, the signup API, each service's worker (the
deployments of ``eventful workers``), reports' beat, the signup outbox relay, a Flower per
service (each service's control and event exchanges are its own, so one Flower sees one
service) and a Prometheus that scrapes the workers and the broker (infra/monitoring.py).
Services run as their own broker user and database role (what
``topology apply`` created); Flower and the operator's URLs use the admin settings. It is
local mode (``LOCAL_MODE=1`` unless the environment says otherwise): secrets not set take
their local defaults.

A process that exits is restarted with backoff, as a deployment's process manager
would (infra/supervisor.py); one that keeps failing (more than ``--restarts`` exits
within ``--restart-window`` seconds) stops everything, exit code 1. Ctrl-C (or SIGTERM)
stops every process group: SIGTERM first (workers finish their current tasks), SIGKILL
for what is still there after ``--grace`` seconds.
"""

import argparse
import importlib.util
import os
import signal
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from infra.monitoring import prometheus, targets_dir, unavailable
from infra.processes import wait_for
from infra.sms_gateway import SmsGateway
from infra.supervisor import Program, Supervisor
from shared.core.settings import get_settings
from shared.ops.apply import vhost_of
from shared.ops.deployments import WORKERS


def programs(args: argparse.Namespace, logs: Path) -> list[Program]:
    """Everything ``make run`` starts, each service with its own credentials."""
    settings, py = get_settings(), sys.executable
    mail = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(args.smtp_port)}
    sms = {"SMS_GATEWAY_URL": f"http://127.0.0.1:{args.sms_port}"}
    found = [
        Program(
            "smtp-sink", [py, "-m", "infra.smtp_sink", "--port", str(args.smtp_port)], echo=True
        ),
        *_workers(args, logs, {**mail, **sms}),
        Program(
            "reports-beat",
            [py, "-m", "celery", "-A", "services.reports.app", "beat", "-l", "INFO"],
            _as_service("reports"),
        ),
        *_signup(args, sms),
    ]
    if unavailable(args.prometheus_port) is None:
        exporter = urlsplit(settings.rabbitmq_metrics_url).netloc
        found.append(prometheus(args.prometheus_port, logs, vhost_of(settings.amqp_url), exporter))
    return found


def _as_service(name: str) -> dict[str, str]:
    """The URLs with ``name``'s own broker user and database role."""
    settings = get_settings()
    creds = settings.permissions
    return {
        "AMQP_URL": creds.amqp_url(name, settings.amqp_url),
        "DATABASE_URL": creds.database_url(name, settings.database_url),
    }


def _workers(args: argparse.Namespace, logs: Path, env: dict[str, str]) -> list[Program]:
    """Each deployment's worker, serving /metrics on a port of its own, and its Flower."""
    celery = [sys.executable, "-m", "celery"]
    found = []
    for offset, deployment in enumerate(WORKERS.values()):
        worker_env = {**_as_service(deployment.service), **env}
        worker_env["METRICS_PORT"] = str(args.metrics_port + offset)
        worker_env["METRICS_TARGETS_DIR"] = str(targets_dir(logs))
        found.append(
            Program(f"{deployment.service}-worker", [*celery, *deployment.argv(), "-E"], worker_env)
        )
        flower = [f"--port={args.flower_port + offset}", "--address=127.0.0.1"]
        found.append(
            Program(
                f"{deployment.service}-flower", [*celery, "-A", deployment.app, "flower", *flower]
            )
        )
    return found


def _signup(args: argparse.Namespace, sms: dict[str, str]) -> list[Program]:
    """The signup API and its outbox relay, once their modules are there."""
    py, found = sys.executable, []
    if importlib.util.find_spec("services.signup.api"):
        api = ["services.signup.api:app", "--host", "127.0.0.1", "--port", str(args.api_port)]
        found.append(
            Program("signup-api", [py, "-m", "uvicorn", *api], {**_as_service("signup"), **sms})
        )
    if importlib.util.find_spec("shared.ops"):
        found.append(
            Program(
                "signup-outbox-relay",
                [py, "-m", "shared.ops", "outbox", "relay", "signup"],
                _as_service("signup"),
            )
        )
    return found


def urls(args: argparse.Namespace, started: list[Program], logs: Path) -> str:
    management = urlsplit(get_settings().rabbitmq_management_url.split(";")[0])
    names = {p.name for p in started}
    lines = [
        f"signup API        http://127.0.0.1:{args.api_port}/docs"
        if "signup-api" in names
        else "signup API        (services/signup/api.py not there yet)",
        "  reads (GET /users/{id}, /tasks/{id}): Authorization: Bearer $API_TOKEN"
        " (unset: the local default, see services/signup/config.py)",
        f"RabbitMQ UI       http://{management.hostname}:{management.port or 15672}"
        f" (user {management.username or 'guest'}; password as in RABBITMQ_MANAGEMENT_URL)",
    ]
    for offset, service in enumerate(WORKERS):
        lines.append(f"Flower {service:<10} http://127.0.0.1:{args.flower_port + offset}")
    for offset, service in enumerate(WORKERS):
        lines.append(f"metrics {service:<9} http://127.0.0.1:{args.metrics_port + offset}/metrics")
    lines.append(
        f"Prometheus        http://127.0.0.1:{args.prometheus_port}/targets"
        " (alerts: /alerts; scrapes every worker and RabbitMQ's exporter)"
        if "prometheus" in names
        else f"Prometheus        ({unavailable(args.prometheus_port)})"
    )
    lines += [
        f"SMTP sink         127.0.0.1:{args.smtp_port} (mails are printed below)",
        f"SMS gateway stub  http://127.0.0.1:{args.sms_port}/messages",
        f"logs              {logs}",
        "ready: Ctrl-C stops everything; a process that exits is restarted",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    logs = Path(args.logs or tempfile.mkdtemp(prefix="eventful-run-"))
    logs.mkdir(parents=True, exist_ok=True)
    stopping: list[str] = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (&)
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    gateway = SmsGateway(port=args.sms_port).start()
    supervisor = Supervisor(
        programs(args, logs), logs, {"LOCAL_MODE": "1", **os.environ},
        restarts=args.restarts, window=args.restart_window,
    )  # fmt: skip
    try:
        supervisor.start()
        worker_logs = [logs / f"{s}-worker.log" for s in WORKERS]
        wait_for(lambda: all(p.exists() and b" ready." in p.read_bytes() for p in worker_logs)
                 or not supervisor.check() or stopping, timeout=120)  # fmt: skip
        if supervisor.failed:
            return 1
        print(urls(args, supervisor.programs, logs), flush=True)
        return supervisor.run(lambda: stopping)
    finally:
        print("stopping ...", flush=True)
        supervisor.stop(args.grace)
        gateway.stop()
        print("stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.run", description=__doc__.split("\n")[0])
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--smtp-port", type=int, default=8025)
    parser.add_argument("--sms-port", type=int, default=8026)
    parser.add_argument("--flower-port", type=int, default=5555, help="first of one per service")
    parser.add_argument("--metrics-port", type=int, default=9101, help="first of one per worker")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--grace", type=float, default=20.0, help="seconds before SIGKILL")
    parser.add_argument(
        "--restarts", type=int, default=5, help="restarts of one process within the window"
    )
    parser.add_argument("--restart-window", type=float, default=60.0, help="seconds")
    parser.add_argument("--logs", help="directory for the processes' logs (default: a temp dir)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

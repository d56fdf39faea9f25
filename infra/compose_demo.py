"""`make compose-demo`: the whole system in containers (infra/docker-compose.yml on the images
infra/engine.sh built), the demo's check run against it, then everything removed.

Every service process is its own container, each service's workers too, as the README says
to deploy them; the ports are published on free loopback ports, never the machine's own.
Podman runs no health check by itself without systemd (its timers are systemd units), so
this runs each container's check every few seconds, as Docker's daemon would: compose waits
for a healthy broker and database before it starts the rest. Exits 0 only if:
- Prometheus scrapes the broker and every worker container (`up` is 1 for each target);
- every signup's welcome e-mail and facts were delivered and counted once;
- CRASH_USERS signups queued, then drained by a notifier worker container that is SIGKILLed
  once the first of them was sent: it comes back under its restart policy and every
  e-mail arrives (a crash between the SMTP server's accept and the commit may send one
  twice: at-least-once, README "notifier"; counted and printed);
- SCALE_USERS signups queued for one, then three notifier worker containers (`--scale`)
  are each sent once, and Prometheus scrapes all three containers.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime

import httpx
from sqlalchemy import create_engine

from infra.demo import sign_up_and_check, welcome_mails
from infra.processes import ROOT, free_port, wait_for

PROJECT = "eventful-demo"
SCALE_USERS = 60
CRASH_USERS = 200
FILES = ["-f", "infra/docker-compose.yml", "-f", "infra/docker-compose.local.yml"]
PORTS = ["RABBITMQ_PORT", "RABBITMQ_UI_PORT", "POSTGRES_PORT", "API_PORT", "FLOWER_PORT",
         "FLOWER_NOTIFIER_PORT", "FLOWER_REPORTS_PORT", "PROMETHEUS_PORT"]  # fmt: skip
WORKERS = ["signup-worker", "notifier-worker", "reports-worker"]


def compose(env: dict[str, str], *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker-compose", "-p", PROJECT, *FILES, *args], cwd=ROOT, env=env, **kwargs
    )


def run_health_checks(stop: threading.Event) -> None:
    """Each of the project's containers' health check, every 3 s, until ``stop``."""
    while not stop.wait(3):
        names = subprocess.run(
            ["podman", "ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
             "--format", "{{.Names}}"], capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        for name in names:
            subprocess.run(["podman", "healthcheck", "run", name], capture_output=True)


def container(env: dict[str, str], service: str) -> str:
    return compose(env, "ps", "-q", service, capture_output=True, text=True).stdout.split()[0]


def inspect(name: str, template: str) -> str:
    return subprocess.run(
        ["podman", "inspect", "--format", template, name], capture_output=True, text=True
    ).stdout.strip()


def crash(env: dict[str, str], service: str) -> int:
    """SIGKILL the main process of ``service``'s container from the host (a crash, not a
    `stop`: the restart policy applies); its restart count before."""
    name = container(env, service)
    restarts = int(inspect(name, "{{.RestartCount}}"))
    os.kill(int(inspect(name, "{{.State.Pid}}")), signal.SIGKILL)
    return restarts


def restarted(env: dict[str, str], service: str, before: int) -> bool:
    name = container(env, service)
    count, state = int(inspect(name, "{{.RestartCount}}")), inspect(name, "{{.State.Status}}")
    print(f"{service}: restarted {count - before} time(s) under its restart policy, {state}")
    return count > before and state == "running"


class SmtpLog:
    """What the smtp container printed, timestamped; read again at most once a second
    (each read is a compose call)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.read_at, self.text = env, 0.0, ""

    def fresh(self) -> str:
        self.read_at = 0.0
        return self()

    def __call__(self) -> str:
        if time.monotonic() - self.read_at > 1:
            logs = compose(
                self.env, "logs", "-t", "--no-color", "smtp", capture_output=True, text=True
            )
            self.text, self.read_at = logs.stdout, time.monotonic()
        return self.text


def queue_signups(env: dict[str, str], api: str, count: int, tag: str) -> list[str]:
    """``count`` signups while no notifier worker runs: their welcome e-mails wait."""
    compose(env, "stop", "-t", "20", "notifier-worker", capture_output=True)
    run_id, number = uuid.uuid4().hex[:6], uuid.uuid4().int % 10**5
    emails = [f"{tag}{i}-{run_id}@example.com" for i in range(count)]
    for i, email in enumerate(emails):
        body = {"email": email, "name": f"{tag} {i}", "phone": f"+8220{number:05d}{i:03d}"}
        httpx.post(f"{api}/users/signup", json=body, timeout=30).raise_for_status()
    return emails


def start_notifier_workers(env: dict[str, str], workers: int) -> None:
    scale = ["up", "-d", "--no-recreate", "--scale", f"notifier-worker={workers}"]
    compose(env, *scale, "notifier-worker", capture_output=True)


def all_sent(log: SmtpLog, emails: list[str]) -> None:
    wait_for(lambda: all(welcome_mails(log(), e) for e in emails), timeout=600, interval=1)


def drain_rate(env: dict[str, str], api: str, log: SmtpLog, workers: int) -> tuple[float, bool]:
    """SCALE_USERS signups queued while no notifier worker runs, then ``workers`` worker
    containers started (`--scale`): welcome e-mails a second, first to last as the sink
    logged them, and whether each was sent exactly once."""
    emails = queue_signups(env, api, SCALE_USERS, "scale")
    start_notifier_workers(env, workers)
    all_sent(log, emails)
    stamps = [
        datetime.fromisoformat(line.split(" | ", 1)[1].split()[0][:26].rstrip("Z"))
        for line in log().splitlines()
        if " | " in line and any(f"mail to {e}: Subject: Welcome" in line for e in emails)
    ]
    seconds = (max(stamps) - min(stamps)).total_seconds() or 1e-3
    return (len(stamps) - 1) / seconds, all(welcome_mails(log(), e) == 1 for e in emails)


def crash_mid_drain(env: dict[str, str], api: str, log: SmtpLog) -> bool:
    """CRASH_USERS signups queued, one notifier worker container started and SIGKILLed as
    soon as the sink has the first of their e-mails; True if it was killed with e-mails
    still to send, came back under its restart policy and every e-mail arrived."""
    emails = queue_signups(env, api, CRASH_USERS, "crash")
    start_notifier_workers(env, 1)
    smtp = container(env, "smtp")  # read by podman directly: compose takes a second a read

    def first_sent() -> bool:
        out = subprocess.run(["podman", "logs", smtp], capture_output=True, text=True)
        return any(welcome_mails(out.stdout + out.stderr, e) for e in emails)

    wait_for(first_sent, timeout=300, interval=0.05)
    restarts = crash(env, "notifier-worker")
    text = log.fresh()
    sent = sum(welcome_mails(text, e) > 0 for e in emails)
    print(f"notifier-worker SIGKILLed with {sent} of {CRASH_USERS} welcome e-mails sent")
    all_sent(log, emails)
    back = restarted(env, "notifier-worker", restarts)
    twice = sum(max(welcome_mails(log(), e) - 1, 0) for e in emails)
    print(f"after the crash: all {CRASH_USERS} sent, {twice} sent twice (a send the kill cut"
          " between the SMTP accept and the commit)")  # fmt: skip
    return sent < CRASH_USERS and back


def scraped(prometheus: str) -> dict[str, int]:
    """Targets Prometheus scraped last time round, by compose service (the broker's job
    as `rabbitmq`): how many answered (`up` is 1)."""
    try:
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": "up"}, timeout=5)
    except httpx.TransportError:
        return {}
    counts: dict[str, int] = {}
    for result in answer.json()["data"]["result"]:
        target = result["metric"].get("compose_service", result["metric"]["job"])
        counts[target] = counts.get(target, 0) + (result["value"][1] == "1")
    return counts


def scrapes(prometheus: str, expected: dict[str, int]) -> bool:
    """Wait until Prometheus scrapes ``expected`` (targets up, by compose service); say so."""
    with contextlib.suppress(AssertionError):
        wait_for(lambda: scraped(prometheus) == expected, timeout=120, interval=2)
    found = scraped(prometheus)
    print(f"prometheus: targets up {found}" + ("" if found == expected else f", not {expected}"))
    return found == expected


def api_ready(api: str) -> bool:
    try:
        return httpx.get(f"{api}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def main() -> int:
    ports = {name: str(free_port()) for name in PORTS}
    env = {**os.environ, **ports, "LOCAL_MODE": "1", "SIGNUP_API_TOKEN": "compose-demo"}
    api = f"http://127.0.0.1:{ports['API_PORT']}"
    stop = threading.Event()
    threading.Thread(target=run_health_checks, args=(stop,), daemon=True).start()
    started = time.monotonic()
    try:
        if compose(env, "up", "-d").returncode != 0:
            return 1
        wait_for(lambda: api_ready(api), timeout=300, interval=1)
        print(f"compose-demo: the API answered {time.monotonic() - started:.0f} s after `up`")
        database = (
            f"postgresql+psycopg://postgres:postgres@127.0.0.1:{ports['POSTGRES_PORT']}/eventful"
        )
        engine = create_engine(database)

        prometheus = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
        ok = scrapes(prometheus, {"rabbitmq": 1, **dict.fromkeys(WORKERS, 1)})

        log = SmtpLog(env)
        ok &= sign_up_and_check(api, engine, lambda email: welcome_mails(log(), email))
        engine.dispose()
        ok &= crash_mid_drain(env, api, log)
        for workers in (1, 3):
            rate, once = drain_rate(env, api, log, workers)
            print(
                f"{workers} notifier worker container(s): {rate:.1f} welcome e-mails/s"
                f" ({SCALE_USERS} queued signups), {'each sent once' if once else 'NOT once'}"
            )
            ok &= once
        ok &= scrapes(
            prometheus, {"rabbitmq": 1, **dict.fromkeys(WORKERS, 1), "notifier-worker": 3}
        )
        print("all delivered and counted once" if ok else "NOT all delivered")
        return 0 if ok else 1
    finally:
        compose(env, "ps")
        stop.set()
        compose(env, "down", "-v", "-t", "20")


if __name__ == "__main__":
    sys.exit(main())

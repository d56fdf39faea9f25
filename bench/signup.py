"""Signup throughput and latency with the broker up, cut and hanging (through a proxy).

``python bench/signup.py [--requests N] [--concurrency C]``: the API under uvicorn on
loopback, one outbox relay process, the real RabbitMQ and PostgreSQL (a private vhost and
database, removed afterwards), the SMS gateway stub. Each phase sends N signups from C
client threads and reports req/s and p50/p99 latency, then how long the outbox took to
drain once the broker was back, and checks every event reached a queue bound to
``user.signed_up`` exactly once.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
from kombu import Connection
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.processes import ROOT, free_port, wait_for  # noqa: E402
from infra.sms_gateway import SmsGateway  # noqa: E402
from infra.tcp_proxy import TcpProxy  # noqa: E402
from tests.conftest import build_stack  # noqa: E402
from tests.infra import servers  # noqa: E402

PHASES = ("up", "cut", "hang")


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def signups(base: str, requests: int, concurrency: int) -> tuple[list[float], int, float]:
    """Send ``requests`` signups from ``concurrency`` threads: (latencies s, errors, wall s)."""
    run = uuid.uuid4().hex[:8]
    clients = [httpx.Client(base_url=base, timeout=30) for _ in range(concurrency)]

    def one(i: int) -> tuple[float, bool]:
        user = {"email": f"b{i}-{run}@example.com", "name": "Bench", "phone": "+821012345678"}
        started = time.perf_counter()
        response = clients[i % concurrency].post("/users/signup", json=user)
        return time.perf_counter() - started, response.status_code == 201

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    for client in clients:
        client.close()
    return [r[0] for r in results], sum(not r[1] for r in results), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="signups per phase")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-signup-"))
    with ExitStack() as cleanup:
        stack = build_stack(servers(cleanup), cleanup, logs)
        gateway = SmsGateway().start()
        cleanup.callback(gateway.stop)
        proxy = TcpProxy.to(stack.amqp_url).start()
        cleanup.callback(proxy.stop)
        through_proxy = proxy.url(stack.amqp_url)
        env = {**stack.env, "AMQP_URL": through_proxy, "SMS_GATEWAY_URL": gateway.url}
        env["LOCAL_MODE"] = "1"  # the API's local token: the bench only signs up
        port = free_port()
        api = spawn(
            [sys.executable, "-m", "uvicorn", "services.signup.api:app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"],
            env, logs / "api.log",
        )  # fmt: skip
        cleanup.callback(stop, api)
        relay = spawn(
            [sys.executable, "-m", "shared.outbox", "relay", "signup", "--interval", "0.2"],
            env, logs / "relay.log",
        )  # fmt: skip
        cleanup.callback(stop, relay)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(base), timeout=30)

        tap = f"bench-tap-{uuid.uuid4().hex[:6]}"
        with Connection(stack.amqp_url) as conn:
            conn.default_channel.queue_declare(tap, durable=True, auto_delete=False)
            conn.default_channel.queue_bind(tap, "events", "user.signed_up")
        engine = create_engine(stack.database_url)
        cleanup.callback(engine.dispose)

        def unsent() -> int:
            with engine.connect() as c:
                return c.execute(
                    text("SELECT count(*) FROM signup.outbox WHERE published_at IS NULL")
                ).scalar()

        signups(base, 20, args.concurrency)  # warm-up: connections, first-use imports
        wait_for(lambda: unsent() == 0, timeout=30)
        print(
            f"signup bench: {args.requests} signups per phase, {args.concurrency} client threads,"
            f" uvicorn (1 process) on loopback, 1 outbox relay (poll 0.2 s), broker through a"
            f" loopback proxy, RabbitMQ {stack.amqp_url.split('@')[-1]}, PostgreSQL private db"
        )
        header = f"{'broker':<6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
        print(f"{header} {'unsent at end':>14} {'drained in s':>13}")
        expected = 20
        for phase in PHASES:
            if phase != "up":
                getattr(proxy, phase)()
            latencies, errors, wall = signups(base, args.requests, args.concurrency)
            left = unsent()
            proxy.restore()
            restored = time.perf_counter()
            wait_for(lambda: unsent() == 0, timeout=60, interval=0.05)
            drained = time.perf_counter() - restored
            expected += args.requests - errors
            cuts = statistics.quantiles(latencies, n=100)
            print(
                f"{phase:<6} {len(latencies) / wall:>8.1f} {cuts[49] * 1000:>8.1f}"
                f" {cuts[98] * 1000:>8.1f} {errors:>7} {left:>14} {drained:>13.2f}"
            )
        ids = _drain_ids(stack.amqp_url, tap, expected)
        print(f"events delivered: {len(ids)} messages, {len(set(ids))} distinct, {expected} sent")
        with Connection(stack.amqp_url) as conn:
            conn.default_channel.queue_delete(tap)
        return 0 if len(ids) == len(set(ids)) == expected else 1


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _drain_ids(amqp_url: str, queue: str, expected: int) -> list[str]:
    """Every event id in ``queue`` once ``expected`` have arrived (and a second for more)."""
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        wait_for(lambda: channel.queue_declare(queue, passive=True).message_count >= expected, 30)
        time.sleep(1.0)
        ids = []
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            ids.append(message.headers["id"])
    return ids


if __name__ == "__main__":
    sys.exit(main())

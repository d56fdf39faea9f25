"""What the chaos run does to the system, one fault at a time, and the bad input it mixes in.

Every fault is undone before it returns (the worker restarted, the server back), so the
run ends on a healthy system and what is missing then was lost, not merely late.
"""

import argparse
import json
import pickle
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import amqp
from kombu import Connection
from kombu.exceptions import OperationalError

from infra import pg_ha
from infra.chaos_env import Fleet, private_services
from infra.processes import wait_for
from infra.smtp_sink import SmtpSink
from infra.tcp_proxy import TcpProxy

#: Big enough to be refused by the contract (a name of at most 200 characters), far below
#: RabbitMQ's own 128 MiB limit: the platform itself sets no message size limit.
OVERSIZED = 5 * 1024 * 1024
BAD_PREFIX = "chaos-bad-"


class Mailbox:
    """The SMTP server the notifier sends to; it can go away and come back on the same port,
    keeping everything it received before."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sink = SmtpSink(port=port).start()
        self.messages = self.sink.messages

    def down(self) -> None:
        self.sink.stop()

    def up(self) -> None:
        self.sink = SmtpSink(port=self.port)
        self.sink.messages = self.messages
        self.sink.start()


def kill_notifier_mid_send(fleet: Fleet, mailbox: Mailbox) -> str:
    """SIGKILL the notifier while its sends wait inside the SMTP conversation (DATA held
    open, as in tests/integration/test_bad_input_and_crashes.py), then start a new one.

    A kill in the milliseconds between the server's 250 and the delivery's commit would
    send that e-mail again: the at-least-once window services/notifier/deliveries.py
    chooses. Holding DATA first puts every in-flight send before that window.
    """
    mailbox.sink.delay = 3.0
    try:
        wait_for(lambda: mailbox.sink.receiving, timeout=60)
        time.sleep(0.5)  # the other threads reach DATA too
        held = mailbox.sink.receiving
        fleet.kill("notifier")
    finally:
        mailbox.sink.delay = 0.0
    wait_for(lambda: mailbox.sink.receiving == 0, timeout=15)
    fleet.start_worker("notifier")
    return f"SIGKILL notifier worker with {held} send(s) inside SMTP DATA, restarted"


def kill_worker(fleet: Fleet, name: str) -> str:
    """SIGKILL a worker at whatever it is doing (under load: in the middle of tasks)."""
    fleet.kill(name)
    fleet.start_worker(name)
    return f"SIGKILL {name} worker, restarted"


def kill_rabbitmq() -> str:
    """SIGKILL the whole node (no clean shutdown, nothing flushed on the way out): only
    what the quorum queues had confirmed may survive, and all of it must."""
    started = time.monotonic()
    private_services("kill-rabbit")
    return f"RabbitMQ node SIGKILL, back in {time.monotonic() - started:.1f} s"


def partition_broker(proxy: TcpProxy, seconds: float) -> str:
    """Partition the workers from the broker: their connections stay open and carry
    nothing (no RST, no FIN), new ones are never answered; only the AMQP heartbeat can
    tell them. Then the network heals."""
    proxy.partition()
    try:
        time.sleep(seconds)
    finally:
        proxy.restore()
    return f"workers<->RabbitMQ partitioned {seconds:g} s (connections hang)"


def crash_postgres(seconds: float, in_flight: Callable[[], str]) -> str:
    """``stop -m immediate`` (a crash: no checkpoint, recovery from the WAL at start) while
    tasks run and ``in_flight()`` has just started report chords, then ``seconds`` with no
    database at all."""
    what = in_flight()
    private_services("crash-pg")
    try:
        time.sleep(seconds)
    finally:
        private_services("start-pg")
    return f"PostgreSQL stop -m immediate, down {seconds:g} s, {what}"


def kill_postgres_primary(in_flight: Callable[[], str]) -> str:
    """SIGKILL the Patroni cluster's primary (its Patroni and every PostgreSQL process: a lost
    server) while tasks run and ``in_flight()`` has just started report chords; a replica is
    promoted, then the old primary is started again and rejoins as a replica."""
    what = in_flight()
    killed = pg_ha.leader()
    started = time.monotonic()
    pg_ha.pg_ha("kill", str(killed))
    promoted = wait_for(
        lambda: next((n for n in pg_ha.NODES if n != killed and pg_ha.in_recovery(n) is False), 0),
        timeout=120,
    )
    took = time.monotonic() - started
    pg_ha.pg_ha("start", str(killed))
    pg_ha.pg_ha("up")  # returns once the primary streams to both replicas again
    return (f"PostgreSQL primary pg{killed} SIGKILL, pg{promoted} promoted after {took:.1f} s,"
            f" pg{killed} rejoined as a replica; {what}")  # fmt: skip


def exits_during_database_outage(fleet: Fleet, seconds: float) -> str:
    """PostgreSQL crashed while tasks run; once the workers have met the outage, a warm
    restart of both (SIGTERM to each main process, as ``docker stop``, systemd and a deploy
    do), so their pool processes exit in order holding result rows of tasks already acked;
    ``seconds`` later the database is back. Every such row must be written
    (``shared/worker/results.py``: an orderly exit waits for the database), and no task may run
    twice for it. Then the workers start again."""
    private_services("crash-pg")
    try:
        time.sleep(seconds / 3)  # tasks end into the outage: the writers find it
        leaving = {name: fleet.workers[name] for name in ("notifier", "reports")}
        for worker in leaving.values():
            worker.proc.send_signal(signal.SIGTERM)  # the main process only: a warm shutdown
        time.sleep(seconds - seconds / 3)
    finally:
        private_services("start-pg")
    waited = time.monotonic()
    for name, worker in leaving.items():
        worker.proc.wait(timeout=300)
        fleet.start_worker(name)
    return (f"PostgreSQL stop -m immediate, down {seconds:g} s; both workers warm-restarted "
            f"in it, exited {time.monotonic() - waited:.1f} s after it was back")  # fmt: skip


def smtp_busy(mailbox: Mailbox, seconds: float) -> str:
    """For ``seconds``, every new connection answered ``421`` at the greeting and every
    kept one at its next ``NOOP`` or ``MAIL`` (then closed)."""
    mailbox.sink.busy = 10**9
    try:
        time.sleep(seconds)
    finally:
        turned_away, mailbox.sink.busy = 10**9 - mailbox.sink.busy, 0
    return f"SMTP busy (421) for {seconds:g} s ({turned_away} connections turned away)"


def smtp_slow(mailbox: Mailbox, seconds: float, delay: float) -> str:
    """Every message held ``delay`` seconds before the server answers, for ``seconds``."""
    mailbox.sink.delay = delay
    try:
        time.sleep(seconds)
    finally:
        mailbox.sink.delay = 0.0
    return f"SMTP answering after {delay:g} s for {seconds:g} s"


def restart_postgres_mid_send(mailbox: Mailbox) -> str:
    """Restart PostgreSQL while sends wait inside SMTP DATA: their delivery transactions
    die with the server, then the SMTP server accepts the messages. The worst moment for
    the notifier's ledger: the e-mail is gone, and ``sent`` must still be recorded."""
    mailbox.sink.delay = 3.0
    try:
        wait_for(lambda: mailbox.sink.receiving, timeout=60)
        held = mailbox.sink.receiving
        started = time.monotonic()
        private_services("restart-pg")
    finally:
        mailbox.sink.delay = 0.0
    return (
        f"PostgreSQL restart ({time.monotonic() - started:.1f} s)"
        f" with {held} send(s) inside SMTP DATA"
    )


def smtp_outage(mailbox: Mailbox, seconds: float) -> str:
    mailbox.down()
    try:
        time.sleep(seconds)
    finally:
        mailbox.up()
    return f"SMTP down {seconds:g} s"


@dataclass(frozen=True)
class BadMessage:
    id: str
    kind: str
    reason: str  # the x-dead-letter-reason each subscriber's DLQ must show


def _envelope(**payload: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "type": "user.signed_up", "version": 1,
        "occurred_at": "2026-11-25T00:00:00Z", "source": "chaos",
        "payload": {"user_id": str(uuid.uuid4()), "email": "bad@example.com", "name": "Bad",
                    **payload},
    }  # fmt: skip


def _celery(envelope: dict[str, Any]) -> bytes:
    return json.dumps([[], {"event": envelope}, {}]).encode()


JSON = {"content_type": "application/json", "content_encoding": "utf-8"}
#: kind: (task header, body, properties, expected reason)
BAD_KINDS: dict[str, tuple[str, Any, dict[str, str], str]] = {
    "invalid-json": ("user.signed_up", lambda: b"{not json", JSON, "undecodable-body"),
    "wrong-content-type": (
        "user.signed_up", lambda: _celery(_envelope()),
        {"content_type": "text/plain", "content_encoding": "utf-8"}, "content-type-not-allowed",
    ),
    "unknown-task": ("user.exploded", lambda: _celery(_envelope()), JSON, "unknown-task"),
    "schema-invalid": (
        "user.signed_up", lambda: _celery(_envelope(email="not-an-address")), JSON, "rejected",
    ),
    "oversized": (
        "user.signed_up", lambda: _celery(_envelope(name="x" * OVERSIZED)), JSON, "rejected",
    ),
    "pickle": (
        "user.signed_up", lambda: pickle.dumps([[], {"event": _envelope()}, {}]),
        {"content_type": "application/x-python-serialize", "content_encoding": "binary"},
        "content-type-not-allowed",
    ),
}  # fmt: skip


def publish_bad_input(amqp_url: str, per_kind: int) -> list[BadMessage]:
    """Publish ``per_kind`` messages of every bad kind to ``events`` as ``user.signed_up``
    (so every subscriber receives each), persistent and confirmed, retrying while the
    broker is away. Each carries an ``id`` header naming it, to find it in the DLQs."""
    sent: list[BadMessage] = []
    for kind, (task, body, props, reason) in BAD_KINDS.items():
        for _ in range(per_kind if kind != "oversized" else max(1, per_kind // 5)):
            bad = BadMessage(f"{BAD_PREFIX}{kind}-{uuid.uuid4()}", kind, reason)
            message = amqp.Message(
                body(), delivery_mode=2, application_headers={"task": task, "id": bad.id}, **props
            )
            wait_for(lambda m=message: _publish(amqp_url, m), timeout=120, interval=1.0)
            sent.append(bad)
    return sent


def _publish(amqp_url: str, message: amqp.Message) -> bool:
    try:
        with Connection(amqp_url, connect_timeout=2) as conn:
            channel = conn.channel()
            channel.confirm_select()
            channel.basic_publish_confirm(message, exchange="events", routing_key="user.signed_up")
    except (OSError, amqp.exceptions.AMQPError, OperationalError):
        return False
    return True


def injections(
    args: argparse.Namespace,
    fleet: Fleet,
    mailbox: Mailbox,
    proxy: TcpProxy,
    crash_with_reports: Callable[[], str],
) -> list[tuple[str, Callable[[], str]]]:
    """The faults, in the order they are injected: each a name and what injects it."""
    injections: list[tuple[str, Callable[[], str]]] = [
        ("kill -9 notifier mid-send", lambda: kill_notifier_mid_send(fleet, mailbox)),
        ("kill -9 RabbitMQ node", kill_rabbitmq),
        ("partition workers/RabbitMQ", lambda: partition_broker(proxy, args.partition)),
        ("kill -9 reports worker", lambda: kill_worker(fleet, "reports")),
        ("PostgreSQL restart mid-send", lambda: restart_postgres_mid_send(mailbox)),
        ("PostgreSQL crash + outage", lambda: crash_postgres(args.db_down, crash_with_reports)),
        ("SMTP 421 at greeting", lambda: smtp_busy(mailbox, args.smtp_busy)),
        ("SMTP slow answers", lambda: smtp_slow(mailbox, args.smtp_slow, args.smtp_delay)),
        ("SMTP down", lambda: smtp_outage(mailbox, args.smtp_down)),
    ]  # fmt: skip
    if args.pg_ha:  # one database server fewer to lose: the primary, and a replica takes over
        kill_primary = lambda: kill_postgres_primary(crash_with_reports)  # noqa: E731
        injections = [i for i in injections if not i[0].startswith("PostgreSQL")]
        injections.insert(4, ("kill -9 PostgreSQL primary", kill_primary))
    elif args.exit_outage > 0:
        exits = lambda: exits_during_database_outage(fleet, args.exit_outage)  # noqa: E731
        injections.append(("pool exits in a PostgreSQL outage", exits))
    return injections

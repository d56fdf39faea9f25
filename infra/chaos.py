"""`make chaos`: N signups through signup -> notifier -> reports while faults are injected,
then what became of every event, counted; exits 1 on any loss, duplicate or dropped message.

    python -m infra.chaos --events 2000 --rate 3 --db-down 300 --partition 150

On private servers (``infra/private_services.sh``: RabbitMQ node ``chaos@localhost`` on
5690, PostgreSQL cluster ``chaos`` on 5433; never the machine's own, which other test runs
share), with a notifier and a reports worker, the signup outbox relay and an SMTP server
on loopback. A producer signs users up at ``--rate`` per second (the user and its
``user.signed_up`` committed to the outbox together; the relay publishes them). Meanwhile,
spread evenly over the production time (each as soon as the one before is over), one
fault after another (``FAULTS``): SIGKILL of the notifier mid-send; SIGKILL of the whole
RabbitMQ node; a partition between the workers and the broker (``--partition`` seconds,
connections that hang, past the heartbeat); SIGKILL of the reports worker; a PostgreSQL
restart mid-send; a PostgreSQL crash (``stop -m immediate``) while report chords run,
then no database for ``--db-down`` seconds; the SMTP server answering 421 at the greeting
(``--smtp-busy``), then slowly (``--smtp-slow``), then down (``--smtp-down``); a
PostgreSQL crash in which both workers are warm-restarted, their pool processes exiting
with result rows still to write (``--exit-outage`` seconds; 0 leaves it out); after
each, a batch of bad input. Then it waits until the pipeline is complete or quiet,
counts (``infra/chaos_count.py``), prints one table, stops everything it started and
removes the private servers (not with ``--keep``).
"""

import argparse
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError

from infra import chaos_faults as faults
from infra import pg_ha
from infra.chaos_count import SUBSCRIBERS, busy_queues, complete, count, progress
from infra.chaos_env import MANAGEMENT_URL, Busy, Fleet, World, exclusive, private_services
from infra.chaos_ledger import declare_ledger
from infra.chaos_tally import Tally
from infra.processes import free_port, wait_for
from infra.tcp_proxy import TcpProxy

#: Exit status when another chaos run holds the private servers (EX_TEMPFAIL).
BUSY = 75
#: Seconds a signup keeps trying, beyond the planned outage, before the run gives up.
DATABASE_PATIENCE = 120
#: The report workflows started just before the database crash: (kind, days ago).
REPORTS = (("daily", 0), ("daily", 1), ("weekly", 7))


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


class Producer(threading.Thread):
    """Signs up ``n`` users at ``rate`` per second, each retried until its transaction is
    known to have committed (a restarting database answers errors for a while)."""

    def __init__(self, n: int, rate: float, patience: float) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.n, self.rate, self.accepted, self.patience = n, rate, 0, int(patience)
        self.started = time.monotonic()

    def run(self) -> None:
        from services.signup.app import service
        from services.signup.signup import DuplicateEmail, create_user
        from shared.service.outbox import Outbox

        outbox = Outbox(service)
        for i in range(self.n):
            time.sleep(max(0.0, self.started + i / self.rate - time.monotonic()))
            for attempt in range(self.patience * 2):
                try:
                    with service.db.transaction() as session:
                        create_user(session, outbox, email=f"user{i}@chaos.example.com", name="C")
                    break
                except DuplicateEmail:
                    break  # an earlier try did commit; only its answer was lost
                except DBAPIError:
                    if attempt == self.patience * 2 - 1:
                        raise
                    time.sleep(0.5)
            self.accepted += 1


def welcome_retry_scale(outage: float) -> float:
    """A ``RETRY_DELAY_SCALE`` under which the welcome e-mail's retries span twice the SMTP
    outage: the outage is a fault to survive, not one that exhausts the retry policy."""
    from services.notifier.app import service

    task = service.celery.tasks["notifier.send_welcome_email"]
    window = sum(
        min(task.retry_backoff_max, task.retry_backoff * 2**i) for i in range(task.max_retries)
    )
    return max(0.01, 2 * outage / window)


def start_reports(engine) -> list[str]:
    """Send ``GenerateReport`` for each of ``REPORTS`` and wait until one of their chords'
    shard counts has run: the workflows are in flight, not merely queued."""
    from datetime import date, timedelta

    from contracts import GenerateReport
    from services.reports.app import service

    query = "SELECT count(*) FROM reports.celery_taskmeta WHERE name = 'reports.count_shard'"
    before = _scalar(engine, query)
    ids = [
        service.send(GenerateReport(kind=kind, day=date.today() - timedelta(days=ago)))
        for kind, ago in REPORTS
    ]
    wait_for(lambda: _scalar(engine, query) > before, timeout=60, interval=0.05)
    return ids


def _scalar(engine, sql: str) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar_one()


def settle(engine, world: World, accepted: int, timeout: float) -> str:
    """Wait until every event went all the way and no queue holds work any more (delayed
    retries included), or nothing moves any more, or ``timeout``."""
    deadline, last, quiet = time.monotonic() + timeout, None, 0
    while time.monotonic() < deadline:
        now, busy = progress(engine), busy_queues(MANAGEMENT_URL, world.vhost)
        if complete(now, accepted) and not busy:  # nothing left that could still duplicate
            return "complete"
        quiet = quiet + 1 if now == last and not busy else 0
        if quiet >= 3:
            return "quiet (nothing left in any queue, nothing moving)"
        last = now
        say(f"waiting: {now} queues={busy}")
        time.sleep(5)
    return f"timed out after {timeout:g} s"


def run(args: argparse.Namespace) -> int:
    logs = Path(tempfile.mkdtemp(prefix="eventful-chaos-"))
    world = World(uuid.uuid4().hex[:8], logs, free_port())
    world.pg_server = pg_ha.DATABASE_URL if args.pg_ha else world.pg_server
    fleet: Fleet | None = None
    mailbox: faults.Mailbox | None = None
    proxy = TcpProxy(5690).start()  # workers <-> broker, to partition them
    started = time.monotonic()
    try:
        _servers("up", args)
        say(f"private servers up; run {world.run_id}, logs in {logs}")
        world.create()
        _configure(world, args)
        declare_ledger(world.amqp_url)
        mailbox = faults.Mailbox(world.smtp_port)
        fleet = Fleet(world, proxy.url(world.amqp_url))
        fleet.start()
        producer = Producer(args.events, args.rate, args.db_down + DATABASE_PATIENCE)
        producer.start()
        engine = create_engine(world.database_url, pool_pre_ping=True)  # it restarts too
        reports: list[str] = []

        def crash_with_reports() -> str:
            reports.extend(start_reports(engine))
            return f"{len(reports)} report workflows in flight"

        injections = faults.injections(args, fleet, mailbox, proxy, crash_with_reports)
        done, bad = _inject(injections, args, producer, engine, world.amqp_url)
        producer.join()
        say(f"all {producer.accepted} signups committed; {len(bad)} bad messages published")
        say(f"settled: {settle(engine, world, producer.accepted, args.settle_timeout)}")
        tally = count(engine, world.amqp_url, producer.accepted, mailbox.messages, bad, reports)
        engine.dispose()
        dead, children = fleet.dead(), fleet.pool_children_lost()
        tally.restarts = len(dead) + children
        if dead or children:
            tally.notes.append(f"exited by themselves: {dead}, pool processes lost: {children}")
        print(f"\nchaos: {args.events} events in {time.monotonic() - started:.0f} s")
        _summary(done, producer.accepted, len(bad), len(reports), tally)
        if args.json:
            tally.write_json(Path(args.json), done)
        return 0 if tally.ok else 1
    finally:
        if fleet is not None:
            fleet.stop()
        if mailbox is not None:
            mailbox.down()
        proxy.stop()
        if not args.keep:
            _servers("down", args)


def _servers(action: str, args: argparse.Namespace) -> None:
    """The private servers (``up`` or ``down``), and the Patroni cluster with ``--pg-ha``."""
    private_services(action)
    if args.pg_ha:
        pg_ha.pg_ha(action)


def _summary(done: list[str], signups: int, bad: int, reports: int, tally: Tally) -> None:
    print("faults injected:\n" + "\n".join(done))
    print(
        f"messages: {signups} signups, {bad} bad messages"
        f" ({len(faults.BAD_KINDS)} kinds, each to {len(SUBSCRIBERS)}"
        f" subscribers), {reports} report workflows"
    )
    print(tally.table(), flush=True)


def _inject(
    injections: list[tuple[str, Callable[[], str]]],
    args: argparse.Namespace,
    producer: Producer,
    engine: Engine,
    amqp_url: str,
) -> tuple[list[str], list[faults.BadMessage]]:
    """Each fault at its point of the signups (evenly spaced), and bad input after each;
    what each fault did, and the bad messages published."""
    done: list[str] = []
    bad: list[faults.BadMessage] = []
    spacing = args.events / args.rate / (len(injections) + 1)
    for k, (name, inject) in enumerate(injections, start=1):
        time.sleep(max(0.0, producer.started + k * spacing - time.monotonic()))
        at = f"at signup {producer.accepted}"
        say(f"fault {k} {at} ({progress(engine)['sent']} e-mails sent so far): {name}")
        done.append(f"{k}. {at}: {inject()}")
        say(f"fault {done[-1]}")
        bad += faults.publish_bad_input(amqp_url, args.bad_per_kind)
    return done, bad


def _configure(world: World, args: argparse.Namespace) -> None:
    """The settings the run's services get beyond the world's own."""
    smtp_away = max(args.smtp_down, args.smtp_busy)
    world.env["RETRY_DELAY_SCALE"] = f"{welcome_retry_scale(smtp_away):.3f}"
    # A workflow caught by the crash may wait out the outage, and must end in the run.
    world.env["CHORD_TIMEOUT"] = str(int(args.db_down + 180))
    # Result rows are counted: commit them durably, or a crash would take the last
    # fraction of a second of them (the documented price of synchronous_commit=off).
    world.env["RESULT_SYNCHRONOUS_COMMIT"] = "true"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=10_000, help="signups to drive through")
    parser.add_argument("--rate", type=float, default=25.0, help="signups per second")
    parser.add_argument("--smtp-down", type=float, default=60.0, help="SMTP outage, seconds")
    parser.add_argument(
        "--db-down", type=float, default=300.0, help="PostgreSQL crash outage, seconds"
    )
    parser.add_argument(
        "--partition", type=float, default=150.0, help="workers/broker partition, seconds"
    )
    parser.add_argument("--smtp-busy", type=float, default=60.0, help="SMTP 421, seconds")
    parser.add_argument(
        "--exit-outage", type=float, default=60.0,
        help="PostgreSQL outage in which both workers restart, seconds (0: no such fault)",
    )  # fmt: skip
    parser.add_argument("--smtp-slow", type=float, default=60.0, help="SMTP slow, seconds")
    parser.add_argument(
        "--smtp-delay", type=float, default=5.0, help="SMTP answer delay while slow, seconds"
    )
    parser.add_argument("--bad-per-kind", type=int, default=2, help="per kind, after each fault")
    parser.add_argument(
        "--settle-timeout", type=float, default=600.0, help="seconds to wait after the last signup"
    )
    parser.add_argument(
        "--pg-ha", action="store_true",
        help="the database on the 3-node Patroni cluster; its primary is killed",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="leave the private servers running")
    parser.add_argument("--json", help="also write the counts to this file")
    parser.add_argument(
        "--lock-timeout", type=float, default=3600.0, help="seconds to wait for another run"
    )
    args = parser.parse_args(argv)
    # SIGTERM (a test's timeout, Ctrl-C's sibling) unwinds through run()'s cleanup.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with exclusive(args.lock_timeout):
            return run(args)
    except Busy as exc:
        print(f"chaos: not run: {exc}", file=sys.stderr)
        return BUSY


if __name__ == "__main__":
    sys.exit(main())

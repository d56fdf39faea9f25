"""One beat fires the schedule, however many beat processes are started.

``celery beat`` has no notion of a peer: two of them (a deploy that overlaps, an operator
who starts a second one by mistake) fire every entry twice. ``SingleBeatScheduler`` only
ticks while it holds a PostgreSQL session-level advisory lock (``pg_try_advisory_lock``)
on a connection of its own; every other beat stands by and tries for the lock every
``max_interval`` seconds. PostgreSQL releases the lock when the holder's session ends,
so a holder that dies (even by SIGKILL) is replaced within one interval.

When and how often each entry last ran is kept in ``<service>.beat_entries`` (a platform table,
``shared/service_migrations``), written after each firing the broker confirmed. A beat that
takes over continues the holder's schedule: it neither repeats what the holder fired nor
skips a crontab run that fell due while nobody held the lock (that run fires once, at once).

A firing the broker did not take (down, unreachable, nacked) is not a firing: Celery's
``Scheduler.apply_entry`` logs the error and keeps the entry advanced, so the run is gone.
Here the entry is put back as it was and stays due; beat sends it again every
``max_interval`` until the broker confirms it, and a beat that takes over meanwhile finds
it still due in the table and sends it (once: it is stored only after the confirm).

Enable it per service app: ``beat_scheduler = "shared.worker.beat:SingleBeatScheduler"``.
"""

import copy
import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from typing import Any

import psycopg
from celery import Celery
from celery.beat import ScheduleEntry, Scheduler, SchedulingError
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from shared.core.settings import get_settings
from shared.worker.app import PUBLISH_RETRY_POLICY

logger = logging.getLogger(__name__)

#: Beat sends an unconfirmed firing again on its next tick, so one publish need not ride out
#: an outage (``PUBLISH_RETRY_POLICY`` retries for about a minute): about 2 s, then beat is
#: back in its loop, where it checks that the lock is still its own before the next try.
BEAT_PUBLISH_RETRY_POLICY = {**PUBLISH_RETRY_POLICY, "max_retries": 3}


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key per service (locks are per database)."""
    digest = hashlib.blake2b(f"celery-beat/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_is_held(conn: Connection, name: str) -> bool:
    """Whether any session holds ``name``'s beat lock, seen from any connection to its database
    (``pg_locks`` shows a bigint advisory key as its high and low 32 bits, ``objsubid`` 1)."""
    key = lock_key(name) & 0xFFFFFFFFFFFFFFFF
    held = text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid::bigint = :high AND objid::bigint = :low AND objsubid = 1)"
    )
    return bool(conn.execute(held, {"high": key >> 32, "low": key & 0xFFFFFFFF}).scalar())


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL (``postgresql+psycopg://``) in the form psycopg connects with."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class AdvisoryLock:
    """A session-level advisory lock, held for as long as its dedicated connection lives."""

    def __init__(self, database_url: str, key: int) -> None:
        self.url = libpq_url(database_url)
        self.key = key
        self.conn: psycopg.Connection | None = None

    @property
    def session(self) -> int | None:
        """The server process holding the lock for us: changes with every acquisition."""
        return self.conn.info.backend_pid if self.conn is not None else None

    def held(self) -> bool:
        """True while the lock is ours; otherwise one attempt to take it."""
        if self.conn is not None:
            try:
                self.conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                logger.warning("beat: lost the connection holding the beat lock")
                self.release()
        try:
            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=5, keepalives=1, tcp_user_timeout=10000
            )
            with conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)) as cursor:
                row = cursor.fetchone()
                taken = row is not None and row[0]
        except psycopg.Error as exc:
            logger.warning("beat: cannot reach PostgreSQL for the beat lock: %s", exc)
            return False
        if taken:
            self.conn = conn
            return True
        conn.close()
        return False

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None


def restore(
    entries: Mapping[str, ScheduleEntry],
    stored: Mapping[str, tuple[datetime, int]],
    now: datetime,
) -> list[str]:
    """Continue each entry from its stored last run; entries never stored start at ``now``.

    Returns the names that had no stored state (to be stored now, so a later takeover
    does not count from that beat's own start time).
    """
    fresh = []
    for name, entry in entries.items():
        if name in stored:
            entry.last_run_at, entry.total_run_count = stored[name]
        else:
            entry.last_run_at = now
            fresh.append(name)
    return fresh


class SingleBeatScheduler(Scheduler):
    """An in-memory scheduler that ticks only while it holds the service's beat lock."""

    #: Seconds between lock checks (standby) and the longest sleep while holding it.
    max_interval = 5

    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        self.lock = AdvisoryLock(get_settings().database_url, lock_key(app.main))
        self.table = f'"{app.main}".beat_entries'
        self._session: int | None = None
        self._standing_by = False
        self._unsent = False
        super().__init__(app, *args, **kwargs)

    @cached_property
    def producer(self) -> Any:
        """Connects on its first publish, inside the retry policy. Celery's connects first,
        in ``tick`` after the entry was advanced and before ``apply_entry`` can see an error,
        retrying for ``broker_connection_max_retries`` (minutes) while the broker is down."""
        return self.Producer(  # type: ignore[attr-defined]  # not in celery-types
            self.connection, auto_declare=False
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.lock.held():
            if not self._standing_by:
                logger.info("beat: another beat holds the %s beat lock; standing by", self.app.main)
                self._standing_by = True
            return self.max_interval
        if self.lock.session != self._session:
            try:
                self._take_over()
            except psycopg.Error:
                logger.exception("beat: cannot read the schedule state; giving up the lock")
                self.lock.release()
            if self.lock.conn is None:
                return self.max_interval
        delay = super().tick(*args, **kwargs)
        if self._unsent:
            self._unsent = False
            return self.max_interval
        return delay

    def _take_over(self) -> None:
        if self.lock.conn is None:
            return
        rows = self.lock.conn.execute(
            f"SELECT name, last_run_at, total_run_count FROM {self.table}"
        ).fetchall()
        fresh = restore(self.schedule, {n: (at, count) for n, at, count in rows}, self.app.now())
        for name in fresh:
            self._store(self.schedule[name])
        self._heap = None
        self._session = self.lock.session
        self._standing_by = False
        logger.info("beat: holds the %s beat lock; firing %s", self.app.main, sorted(self.schedule))

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        """Send ``entry``'s firing and store it, or leave it due if the broker did not take it.

        ``tick`` has already replaced ``entry`` by its advanced successor; a firing that was
        not confirmed puts ``entry`` back, and the rebuilt heap finds it due on the next tick.
        """
        if entry.name is None:
            raise SchedulingError(f"an unnamed entry of the schedule: {entry!r}")
        logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        sent = copy.copy(entry)
        sent.options = {"retry_policy": BEAT_PUBLISH_RETRY_POLICY, **(entry.options or {})}
        try:
            self.apply_async(sent, producer=producer, advance=False)
        except SchedulingError as exc:
            logger.error("beat: %s; it stays due, next try in %s s", exc, self.max_interval)
            self.schedule[entry.name] = entry
            self._heap = None
            self._unsent = True
            return
        self._store(self.schedule[entry.name])

    def _store(self, entry: ScheduleEntry) -> None:
        """Record a firing after the broker confirmed it: a crash in between repeats it, never
        skips it."""
        if self.lock.conn is None:
            return
        try:
            self.lock.conn.execute(
                f"INSERT INTO {self.table} (name, last_run_at, total_run_count)"
                " VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE"
                " SET last_run_at = EXCLUDED.last_run_at,"
                " total_run_count = EXCLUDED.total_run_count",
                (entry.name, entry.last_run_at, entry.total_run_count),
            )
        except psycopg.Error:
            logger.exception("beat: could not record the run of %s; giving up the lock", entry.name)
            self.lock.release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.lock.release()

    @property
    def info(self) -> str:
        return f"    . single beat -> advisory lock {self.lock.key} on {self.table}"

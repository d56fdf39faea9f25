"""The report workflow: a chord counts the period's shards in parallel and sums them, then
a chain collects the details (a long, resumable scan), aggregates and renders the report.

    chord(group(count_shard per hour or day), sum_counts) | collect | aggregate | render

``render`` stores the report (JSON and Markdown) and publishes ``report.generated``; its
return value, the report id, is the workflow's result.
"""

import functools
import logging
import time
from datetime import UTC, date, datetime
from typing import Any
from uuid import NAMESPACE_URL, uuid5
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from celery import Celery, chain, chord, group
from celery.canvas import Signature
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.dialects.postgresql import insert

from services.reports.config import ReportsSettings
from services.reports.model import facts, reports, scan_progress
from services.reports.periods import period, shards
from services.reports.render import markdown, summarize
from services.reports.scan import Progress, next_batch
from shared.contracts import ReportGenerated, ReportGeneratedPayload
from shared.service import DATABASE_RETRY_DELAY, DATABASE_UNAVAILABLE, Service

logger = logging.getLogger(__name__)


def build(app: Celery, kind: str, day: date) -> Signature:
    """The whole workflow for one report, ready to apply or to replace a task with."""
    tz = ZoneInfo(app.conf.timezone)
    counts = group(
        app.signature("reports.count_shard", args=(start.isoformat(), end.isoformat()))
        for start, end in shards(kind, day, tz)
    )
    return chain(
        chord(counts, app.signature("reports.sum_counts")),
        app.signature("reports.collect", kwargs={"kind": kind, "day": day.isoformat()}),
        app.signature("reports.aggregate"),
        app.signature("reports.render"),
    )


def report_id(kind: str, day: str) -> str:
    """One report per kind and day: regenerating it replaces it under the same id."""
    return str(uuid5(NAMESPACE_URL, f"reports/{kind}/{day}"))


def register(service: Service, settings: ReportsSettings) -> None:
    """Define the workflow's tasks on the service's Celery app."""
    celery, db = service.celery, service.db

    @celery.task(name="reports.count_shard", bind=True, shared=False)
    @_outage_retried
    def count_shard(task, start: str, end: str) -> dict[str, Any]:
        query = (
            sa.select(facts.c.type, sa.func.count())
            .where(facts.c.occurred_at >= datetime.fromisoformat(start))
            .where(facts.c.occurred_at < datetime.fromisoformat(end))
            .group_by(facts.c.type)
        )
        with db.transaction() as session:
            counts = dict(session.execute(query).all())
        return {"start": start, "end": end, "counts": counts}

    @celery.task(name="reports.sum_counts", shared=False)
    def sum_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
        totals: dict[str, int] = {}
        for part in parts:
            for event_type, count in part["counts"].items():
                totals[event_type] = totals.get(event_type, 0) + count
        return {"shards": sorted(parts, key=lambda p: p["start"]), "totals": totals}

    @celery.task(
        name="reports.collect",
        bind=True,
        shared=False,
        soft_time_limit=settings.report_soft_time_limit,
        time_limit=settings.report_time_limit,
        max_retries=20,
    )
    @_outage_retried
    def collect(task, summed: dict[str, Any], kind: str, day: str) -> dict[str, Any]:
        """Scan the period's facts; on the soft time limit save progress, retry, resume."""
        start, end = period(kind, date.fromisoformat(day), ZoneInfo(celery.conf.timezone))
        progress, attempts = _load_progress(db, task.request.id)
        try:
            while batch := _batch(db, start, end, progress, settings.report_scan_batch):
                progress = progress.add(batch)
                if settings.report_scan_pause:
                    time.sleep(settings.report_scan_pause)
        except Exception as exc:
            if not _cut_short(exc):
                raise
            db.dispose()  # a query the limit interrupted leaves its connection unusable
            _save_progress(db, task.request.id, progress, attempts + 1)
            logger.warning("collect %s %s: soft time limit after %d facts; resuming later",
                           kind, day, progress.scanned)  # fmt: skip
            raise task.retry(exc=exc, countdown=1) from exc
        with db.transaction() as session:
            done = scan_progress.c.task_id == task.request.id
            session.execute(scan_progress.delete().where(done))
        return {
            **summed,
            **progress.to_json(),
            "kind": kind,
            "day": day,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "timezone": celery.conf.timezone,
            "attempts": attempts + 1,
        }

    @celery.task(name="reports.aggregate", shared=False)
    def aggregate(collected: dict[str, Any]) -> dict[str, Any]:
        return {**collected, "summary": summarize(collected["totals"], collected["breakdown"])}

    @celery.task(name="reports.render", bind=True, shared=False)
    @_outage_retried
    def render(task, document: dict[str, Any]) -> str:
        """Store the report, then announce it. The event id derives from this task's id, so
        a redelivered render announces the same event again and consumers drop the copy."""
        rid = report_id(document["kind"], document["day"])
        row = {
            "kind": document["kind"],
            "day": date.fromisoformat(document["day"]),
            "generated_at": datetime.now(UTC),
            "summary": document["summary"],
            "document": document,
            "markdown": markdown(document),
        }
        with db.transaction() as session:
            session.execute(
                insert(reports)
                .values(id=rid, **row)
                .on_conflict_do_update(index_elements=[reports.c.id], set_=row)
            )
        service.publish(
            ReportGenerated(
                id=uuid5(NAMESPACE_URL, f"{rid}/{task.request.id}"),
                source="reports",
                payload=ReportGeneratedPayload(
                    report_id=rid, kind=document["kind"], day=document["day"],
                    summary=document["summary"],
                ),
            )
        )  # fmt: skip
        return rid


def _outage_retried(run):
    """A workflow task waits out a database outage as an event handler does
    (``shared/service.py``): retried once the database is back, without spending its
    ``max_retries``, never dead-lettered for it. A chord member keeps its id and chord."""

    @functools.wraps(run)
    def wrapper(task, *args: Any, **kwargs: Any) -> Any:
        try:
            return run(task, *args, **kwargs)
        except DATABASE_UNAVAILABLE as exc:
            if _cut_short(exc):  # the soft time limit, surfacing as a database error
                raise
            logger.warning("%s[%s]: database unavailable, retrying: %s",
                           task.name, task.request.id, exc)  # fmt: skip
            raise task.retry_after_outage(exc, DATABASE_RETRY_DELAY) from None

    return wrapper


def _cut_short(exc: BaseException | None) -> bool:
    """Whether the soft time limit caused ``exc``: raised inside a query, it surfaces as the
    database error of cleaning up the interrupted connection, with the limit as context."""
    while exc is not None:
        if isinstance(exc, SoftTimeLimitExceeded):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _batch(db, start: datetime, end: datetime, progress: Progress, size: int) -> list[Any]:
    with db.transaction() as session:
        return next_batch(session, start, end, progress.cursor, size)


def _load_progress(db, task_id: str) -> tuple[Progress, int]:
    with db.transaction() as session:
        row = session.execute(
            sa.select(scan_progress.c.state, scan_progress.c.attempts).where(
                scan_progress.c.task_id == task_id
            )
        ).one_or_none()
    if row is None:
        return Progress(), 0
    logger.info("collect %s: resuming after %d facts", task_id, row.state["scanned"])
    return Progress.from_json(row.state), row.attempts


def _save_progress(db, task_id: str, progress: Progress, attempts: int) -> None:
    values = {"state": progress.to_json(), "attempts": attempts, "saved_at": datetime.now(UTC)}
    with db.transaction() as session:
        session.execute(
            insert(scan_progress)
            .values(task_id=task_id, **values)
            .on_conflict_do_update(index_elements=[scan_progress.c.task_id], set_=values)
        )

"""The report workflow: a chord counts the period's shards in parallel and sums them, then
a chain collects the details (a long, resumable scan), aggregates and renders the report.

    chord(group(count_shard per hour or day), sum_counts) | collect | aggregate | render

``render`` stores the report (JSON and Markdown) and publishes ``report.generated``; its
return value, the report id, is the workflow's result.
"""

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

from contracts import ReportGenerated, ReportGeneratedPayload
from services.reports.config import ReportsSettings
from services.reports.model import facts, reports, scan_progress
from services.reports.periods import period, shards
from services.reports.render import markdown, summarize
from services.reports.scan import Progress, next_batch
from shared import Database, RetryPolicy, Service

logger = logging.getLogger(__name__)


def build(app: Celery, kind: str, day: date) -> Signature:
    """The whole workflow for one report, ready to apply or to replace a task with."""
    # celery-types: a tzinfo; the setting is a zone name (Celery.timezone builds the tzinfo)
    tz = ZoneInfo(app.conf.timezone)  # type: ignore[arg-type]
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


def count_shard(start: str, end: str, db: Database) -> dict[str, Any]:
    query = (
        sa.select(facts.c.type, sa.func.count())
        .where(facts.c.occurred_at >= datetime.fromisoformat(start))
        .where(facts.c.occurred_at < datetime.fromisoformat(end))
        .group_by(facts.c.type)
    )
    with db.transaction() as session:
        counts: dict[str, int] = dict(session.execute(query).all())
    return {"start": start, "end": end, "counts": counts}


def sum_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, int] = {}
    for part in parts:
        for event_type, count in part["counts"].items():
            totals[event_type] = totals.get(event_type, 0) + count
    return {"shards": sorted(parts, key=lambda p: p["start"]), "totals": totals}


def collect(
    summed: dict[str, Any], kind: str, day: str, task, db: Database, settings: ReportsSettings
) -> dict[str, Any]:
    """Scan the period's facts; on the soft time limit save progress, retry, resume."""
    timezone = task.app.conf.timezone
    start, end = period(kind, date.fromisoformat(day), ZoneInfo(timezone))
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
        "timezone": timezone,
        "attempts": attempts + 1,
    }


def aggregate(collected: dict[str, Any]) -> dict[str, Any]:
    return {**collected, "summary": summarize(collected["totals"], collected["breakdown"])}


def render(document: dict[str, Any], task, db: Database, publish) -> str:
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
    publish(
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


def register(service: Service, settings: ReportsSettings) -> None:
    """Declare the workflow's steps as the service's tasks."""
    service.task()(count_shard)
    service.task()(sum_counts)
    service.task(
        retry=COLLECT_RETRY,
        soft_time_limit=settings.report_soft_time_limit,
        time_limit=settings.report_time_limit,
    )(collect)
    service.task()(aggregate)
    service.task()(render)


#: ``collect`` retries itself after each soft time limit, resuming where it stopped.
COLLECT_RETRY = RetryPolicy(max_retries=20)


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

"""A warm shutdown finishes the task messages the prefork parent has begun writing to its
pool processes, before the pool is told to stop.

The parent writes a task into a pool process's pipe a buffer (64 KiB) at a time, from its
event loop. A warm shutdown ends that loop and closes the pool; the consumer's close then
calls ``AsynPool.flush``, which in Celery 5.7 drives started writes only while the pool
runs, and otherwise forgets them (its ``finally``). The pool process waits for the rest of
the message for ever, reading the stop sentinel as part of it, and the parent waits for the
pool process (``Pool.join``). A few-MiB message in a busy parent is enough: the chaos run's
oversized input in a database outage (docs/upstream/celery-warm-shutdown-partial-write.md).

Each started write is finished here, between the pool's close and the consumer's, and the
pool process's acceptance of the job read back: ``flush`` discards only jobs not accepted,
whose messages the broker redelivers, so a job it had kept would run twice (here, and
again when redelivered). Accepted, it is acked or dead-lettered by this worker, once.
A job whose write has not begun is left to ``flush``: unacked, it is redelivered.
"""

from typing import Any

from celery import bootsteps
from celery.concurrency.asynpool import _get_job_writer  # type: ignore[attr-defined]
from celery.worker import state as worker_state


def finish_started_writes(pool: Any) -> int:
    """Drive every task write the prefork ``pool`` (Celery's ``TaskPool``) has begun to its
    end and wait for the pool process to accept the job, while that process lives; how many
    writes there were. Any other pool has none."""
    asynpool: Any = getattr(pool, "_pool", None)
    writers = getattr(asynpool, "_active_writers", None)
    if asynpool is None or not writers:
        return 0
    jobs = {_get_job_writer(job): job for job in list(asynpool._cache.values())}
    started = [(writer, jobs[writer]) for writer in list(writers) if writer in jobs]
    for writer, job in started:
        proc = job._write_to or job._scheduled_for
        asynpool._flush_writer(proc, writer)
        _until_accepted(asynpool, job, proc)
    return len(started)


def _until_accepted(asynpool: Any, job: Any, proc: Any) -> None:
    """Read ``proc``'s results (with the pool's own reader, which also finishes a result the
    event loop had begun reading) until it has accepted ``job`` or is gone."""
    results = asynpool._result_handler
    gone: list[int] = []
    while not job._accepted and not gone and proc._is_alive():
        results._flush_outqueue(
            proc.outqR_fd, gone.append, results.fileno_to_outq, results.on_state_change
        )


class FinishPoolWrites(bootsteps.StartStopStep):
    """Closes after the pool (its event loop has ended) and before the consumer stops,
    whose ``flush`` would forget a half-written message. Not in a cold shutdown: that
    terminates the pool processes rather than join them, and must not wait for one."""

    requires = ("celery.worker.components:Pool",)

    def close(self, w: Any) -> None:
        if worker_state.should_terminate in (None, False):
            finish_started_writes(w.pool)

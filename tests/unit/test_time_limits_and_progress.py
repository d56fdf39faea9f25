"""Time limits a call may ask for, and the record a pool process leaves for its parent
when its hard time limit kills it (``shared.worker.progress``)."""

import os
import time

import pytest
from kombu.exceptions import OperationalError

from shared.core.topology import ServiceTopology
from shared.service.declaration import Service
from shared.worker import progress


def a_task():
    service = Service(ServiceTopology("shop"))

    @service.task(soft_time_limit=5, time_limit=10)
    def scan(day: str) -> str:
        return day

    return service.celery.tasks["shop.scan"]


@pytest.mark.parametrize(
    "limits",
    [
        {"soft_time_limit": 2, "time_limit": 1},  # the issue's: below the soft one
        {"soft_time_limit": 2, "time_limit": 2},
        {"time_limit": 3},  # below the task's own soft limit (5)
    ],
)
def test_a_call_whose_hard_limit_is_not_above_its_soft_one_is_refused_before_publishing(limits):
    with pytest.raises(ValueError, match="must be above soft_time_limit"):
        a_task().apply_async(("2026-01-01",), **limits)


def test_the_parent_reads_what_a_killed_pool_process_noted_last(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "DIRECTORY", str(tmp_path))
    ready = os.pipe()
    pid = os.fork()
    if pid == 0:  # the pool process: a job, one of its handlers retried, then hung
        progress._open()
        progress._started(task_id="job")
        with progress.inline("job", "handler"):
            progress.retried("handler")
        os.write(ready[1], b"x")
        time.sleep(60)
        os._exit(0)
    os.read(ready[0], 1)

    assert progress.killed(pid, "job") == progress.Record("job", "handler", "retried")
    assert os.waitpid(pid, 0)[1] != 0  # killed, not exited
    assert os.listdir(tmp_path) == []  # read once


def test_a_new_job_in_the_same_process_starts_from_a_clean_record(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "DIRECTORY", str(tmp_path))
    ready = os.pipe()
    pid = os.fork()
    if pid == 0:  # the same task id's first attempt retried; its next attempt hangs
        progress._open()
        progress._started(task_id="task")
        progress.retried("task")
        progress._started(task_id="task")
        os.write(ready[1], b"x")
        time.sleep(60)
        os._exit(0)
    os.read(ready[0], 1)

    assert progress.killed(pid, "task") == progress.Record("task", "task", "running")
    os.waitpid(pid, 0)


def test_a_final_failure_hook_does_not_run_for_a_failure_the_worker_requeues():
    reported = []
    service = Service(ServiceTopology("shop"))

    def report(task, exc, task_id, args, kwargs, einfo):
        reported.append(type(exc).__name__)

    @service.task(on_failure=report)
    def send(to: str) -> str:
        return to

    task = service.celery.tasks["shop.send"]
    task.on_failure(OperationalError("broker away"), "t1", (), {}, None)
    task.on_failure(ValueError("refused for good"), "t2", (), {}, None)
    assert reported == ["ValueError"]

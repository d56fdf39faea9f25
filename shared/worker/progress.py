"""What a pool process was doing when its hard time limit killed it, kept for its parent.

The hard limit kills the pool process and its parent settles the message, knowing only
that the task did not finish. Two things it must know happen inside the process: which
handler an entry task was running (``shared.worker.inline``: the others are done or not yet
run), and that the task's retry was already published and confirmed (``ServiceTask``:
the retry carries the task on; dead-lettering it as well would run it after its death).
So each pool process keeps one record of the last such step, written with one ``pwrite``
(no round trip) to a file named after its parent and itself; the parent reads it once
the process is dead (``killed``).

The window left: a process killed between the broker's confirm of its retry and the
write of the record (a few bytecodes) is settled as if no retry had been published.
"""

import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.signals import task_prerun, worker_process_init, worker_process_shutdown

DIRECTORY = os.path.join(tempfile.gettempdir(), "eventful-progress")
SIZE = 1024
RUNNING, RETRIED = "running", "retried"
#: Seconds the parent waits for a killed process to be gone before reading its record.
DEATH_WAIT = 5.0

_file: dict[str, Any] = {"fd": None, "current": None, "inline": False}


@dataclass(frozen=True)
class Record:
    """``job``: the task the pool process ran; ``task``: the step (the job itself, or one
    of an entry task's handlers); ``state``: ``running`` or ``retried``."""

    job: str
    task: str
    state: str


def _path(parent: int, child: int) -> str:
    return os.path.join(DIRECTORY, f"{parent}-{child}")


@worker_process_init.connect
def _open(**_: Any) -> None:
    """Only prefork pool processes keep a record: only there is a hard limit enforced."""
    os.makedirs(DIRECTORY, mode=0o700, exist_ok=True)
    path = _path(os.getppid(), os.getpid())
    _file["fd"] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)


@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    if _file["fd"] is not None:
        os.close(_file["fd"])
        _file["fd"] = None
        with contextlib.suppress(OSError):
            os.unlink(_path(os.getppid(), os.getpid()))


@task_prerun.connect
def _started(task_id: str, **_: Any) -> None:
    """A new job starts from a clean record: an earlier attempt's ``retried`` (same task
    id, same process) must not speak for this one. Handlers traced inside an entry task
    (``inline``) are steps of its job, noted by ``shared.worker.inline``."""
    if not _file["inline"]:
        note(task_id, task_id)


@contextlib.contextmanager
def inline(job: str, task: str) -> Iterator[None]:
    """Steps ``task`` of ``job``: an entry task running one of its handlers."""
    note(job, task)
    _file["inline"] = True
    try:
        yield
    finally:
        _file["inline"] = False


def note(job: str, task: str, state: str = RUNNING) -> None:
    """This process is at ``task`` of ``job`` (in a pool process; elsewhere a no-op)."""
    record = Record(job, task, state)
    _file["current"] = record
    if _file["fd"] is not None:
        data = json.dumps([job, task, state]).encode()
        os.pwrite(_file["fd"], data.ljust(SIZE) if len(data) <= SIZE else b"".ljust(SIZE), 0)


def retried(task_id: str) -> None:
    """``task_id``'s retry is published and confirmed: the record's job is the running
    entry task if ``task_id`` is its handler, else ``task_id`` itself."""
    current = _file["current"]
    inside = current is not None and task_id in (current.job, current.task)
    note(current.job if inside else task_id, task_id, RETRIED)


def killed(pid: int, job: str) -> Record | None:
    """Kill pool process ``pid`` now and return its record of ``job`` (None: no record of
    it). Killed first, so nothing it does after this (a retry, a commit) is missed."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    path = _path(os.getpid(), pid)
    try:
        with open(path, "rb") as f:
            raw = f.read(SIZE)
        os.unlink(path)
        fields = json.loads(raw.strip() or b"null")
    except (OSError, ValueError):
        return None
    record = Record(*fields) if isinstance(fields, list) and len(fields) == 3 else None
    return record if record is not None and record.job == job else None


def _wait_gone(pid: int) -> None:
    """Until ``pid`` is dead (a zombie for the pool to reap, or reaped)."""
    deadline = time.monotonic() + DEATH_WAIT
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
            return
        time.sleep(0.01)

"""The debugging worker of docs/operations/scaling.md starts as written, runs tasks, and says
what it does not enforce; the same pool without the page's flag is still refused."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs import docs_block

ROOT = Path(__file__).resolve().parents[2]


def readme_debugging_command() -> list[str]:
    return shlex.split(docs_block("operations/scaling.md", "debugging worker", "sh").strip())


ADD = """
from services.reports.examples import add
print(add.delay(2, 3).get(timeout=20))
"""


def test_the_readme_s_solo_worker_starts_runs_a_task_and_warns_that_limits_go_unenforced(
    clean_queues,
):
    stack = clean_queues
    worker = stack.worker("reports")
    worker.command = [sys.executable, "-m", *readme_debugging_command()]  # -m celery ...
    worker.start()
    try:
        done = subprocess.run([sys.executable, "-c", ADD], cwd=ROOT, env=stack.env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        worker.stop()

    assert done.stdout.strip() == "5", done.stderr[-2000:]
    log = worker.output()
    assert "reports.collect: time limits on the solo pool are not enforced" in log
    assert "[pool-ignores-limits-allowed]" in log
    assert "FATAL" not in log


def test_a_solo_worker_without_the_flag_refuses_to_start(clean_queues):
    command = [arg for arg in readme_debugging_command() if arg != "--unenforced-time-limits"]
    worker = clean_queues.worker("reports")
    worker.command = [sys.executable, "-m", *command]

    try:
        with pytest.raises(RuntimeError, match=r"FATAL .*\[pool-ignores-limits\]"):
            worker.start()
    finally:
        worker.stop()

"""A worker whose start fails leaves no process behind: nobody holds it yet to stop it, and
a leaked worker goes on consuming the next tests' messages from the same vhost."""

import sys

import pytest

from infra.processes import Worker


def test_a_worker_that_never_becomes_ready_is_stopped_by_its_failed_start(tmp_path):
    worker = Worker("reports", {}, tmp_path)
    worker.command = [sys.executable, "-c", "import time; time.sleep(600)"]  # never "ready."
    with pytest.raises(AssertionError):
        worker.start(timeout=1)
    assert worker.proc.poll() is not None, "the process outlived its failed start"

"""Loaded into a test's worker (``-I``): the pool process running the task whose id is
``DIE_AFTER_SUCCESS`` kills itself after the task succeeded and its result was handed to
the backend, before the result reaches the worker's main process, as a hard time limit
or an OOM kill in ``task_postrun`` would. Only on the first delivery."""

import os
import signal

from celery.signals import task_postrun


@task_postrun.connect
def _die(sender=None, task_id=None, state=None, **_) -> None:
    redelivered = (sender.request.delivery_info or {}).get("redelivered")
    if task_id == os.environ.get("DIE_AFTER_SUCCESS") and state == "SUCCESS" and not redelivered:
        os.kill(os.getpid(), signal.SIGKILL)

"""The source document's Celery, typed as the docs show it (docs/architecture/reports.md),
against a real worker.

The page's block of examples is run as written, in a client process of its own; the
times the document promises (countdown, eta) are measured beside it.
"""

import json

from tests.docs import docs_block
from tests.support import run_client


def test_the_docs_examples_run_as_written_against_a_real_worker(stack, reports_worker):
    run_client(stack, docs_block("architecture/reports.md", "the document's examples"))


#: A countdown and an eta, each timed from the call to its result. The promise is the lower
#: bound (held until its time); the ``get`` timeouts bound the rest without timing the
#: machine (a loaded one took 5.13 s for the 2 s countdown).
TIMED = """
import json, time
from datetime import UTC, datetime, timedelta
from services.reports.examples import add, multiply
started = time.monotonic()
multiply.apply_async((6, 7), countdown=2).get(timeout=30)
countdown = time.monotonic() - started
started = time.monotonic()
add.apply_async((1, 1), eta=datetime.now(UTC) + timedelta(seconds=2)).get(timeout=30)
print(json.dumps({"countdown": countdown, "eta": time.monotonic() - started}))
"""


def test_a_countdown_and_an_eta_hold_the_task_until_their_time(stack, reports_worker):
    took = json.loads(run_client(stack, TIMED))

    assert took["countdown"] >= 2, took
    assert took["eta"] >= 2, took


#: The bound task's view of its own run, and how many attempts the retried ones took.
REQUESTS = """
import json
from services.reports.examples import call_api, process_data, send_email
seen = process_data.apply_async(("payload",), {})
print(json.dumps({"id": seen.id, "seen": seen.get(timeout=10),
                  "call_api": call_api.delay(3).get(timeout=30),
                  "send_email": send_email.delay(2).get(timeout=30)}))
"""


def test_a_bound_task_reads_its_request_and_retries_count_up(stack, reports_worker):
    out = json.loads(run_client(stack, REQUESTS))

    assert out["seen"] == {"id": out["id"], "retries": 0, "args": ["payload"], "kwargs": {},
                           "name": "reports.process_data", "data": "payload"}  # fmt: skip
    assert out["call_api"] == 3  # three ConnectionErrors retried by autoretry_for
    assert out["send_email"] == 2  # two task.retry(exc=..., countdown=60)
    log = reports_worker.output()
    assert log.count("reports.call_api[") >= 4 and "Retry in" in log

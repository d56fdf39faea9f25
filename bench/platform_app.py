"""The same trivial task through the platform: late acks, confirms, dead-lettering, results
stored in PostgreSQL (STARTED and SUCCESS), quorum queues."""

from shared.service.declaration import Service

service = Service("reports")
app = service.celery
app.conf.broker_connection_timeout = 30  # as bench/plain_app.py


@app.task(name="reports.bench_noop", shared=False)
def noop(n: int) -> int:
    return n


@app.task(name="reports.bench_noop_no_result", shared=False, ignore_result=True)
def noop_no_result(n: int) -> int:
    return n

"""A ledger app whose one step has a soft time limit above its hard one: a worker of it
must refuse to start."""

from shared import Service, ServiceTopology

service = Service(ServiceTopology("ledger"))


@service.task(soft_time_limit=60, time_limit=30)
def close_books() -> None:
    return None


app = service.celery

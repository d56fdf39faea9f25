"""How services declare tasks: validated retry policies, handlers that match the declared
subscriptions, and one way to declare every task (with the same dependency injection)."""

import functools
import json
import subprocess
import sys

import pytest

from contracts import UserSignedUp
from shared.core.retry import RetryPolicy
from shared.core.system import declarations
from shared.core.topology import ServiceTopology
from shared.service.declaration import Service


def a_service() -> Service:
    return Service(ServiceTopology("shop", subscribes=("user.signed_up",)))


def test_a_misspelt_retry_option_fails_when_the_policy_is_built():
    with pytest.raises(TypeError, match="max_retires"):
        RetryPolicy(max_retires=5)


@pytest.mark.parametrize(
    "bad",
    [
        {"max_retries": -1},
        {"retry_backoff": 1.5},
        {"autoretry_for": ValueError},
        {"retry_jitter": 1},
    ],
)
def test_an_impossible_retry_option_fails_when_the_policy_is_built(bad):
    with pytest.raises((TypeError, ValueError)):
        RetryPolicy(**bad)


def test_a_misspelt_task_option_fails_when_the_handler_is_registered():
    with pytest.raises(TypeError, match="soft_time_limt"):
        a_service().handles(UserSignedUp, soft_time_limt=5)(lambda event: None)


def test_a_retry_option_outside_the_policy_is_refused():
    with pytest.raises(TypeError, match="max_retries belongs in retry=RetryPolicy"):
        a_service().handles(UserSignedUp, max_retries=5)(lambda event: None)


def test_the_policy_reaches_the_task_and_its_longest_schedule_is_known():
    service = a_service()
    policy = RetryPolicy(autoretry_for=(OSError,), max_retries=4, retry_backoff=10)

    @service.handles(UserSignedUp, retry=policy)
    def greet(event):
        return None

    task = service.celery.tasks["shop.greet"]
    assert (task.max_retries, task.retry_backoff, task.autoretry_for) == (4, 10, (OSError,))
    assert policy.delays() == [10, 20, 40, 80]
    assert task.retry_policy is policy  # the object the startup check reads


def test_an_internal_task_gets_its_arguments_by_position_and_its_dependencies_by_name():
    service = Service(ServiceTopology("shop"), dependencies={"rate": lambda: 3})

    @service.task()
    def price(task, amount: int, rate: int, extra: int = 0) -> int:
        return amount * rate + extra + (task.name == "shop.price")

    run = service.celery.tasks["shop.price"]
    assert run.run(5) == 16
    assert run.run(5, extra=10) == 26
    assert service.celery.amqp.router.route({}, "shop.price")["queue"].name == "shop.tasks"


#: Imports every declared app in a child process: an app imported here would keep this
#: session's default settings, and the integration tests configure theirs later.
DESCRIBE = """
import importlib, json
from shared.core.system import declarations
out = {}
for name, declared in declarations().items():
    service = importlib.import_module(declared.app).service
    out[name] = {
        "subscribes": sorted(declared.topology.subscribes),
        "handled": sorted(service.handled_events),
        "tasks": sorted(t for t in service.celery.tasks if not t.startswith("celery.")),
        "declared": sorted(service._routes),
    }
print(json.dumps(out))
"""


@functools.cache
def described() -> dict:
    done = subprocess.run([sys.executable, "-c", DESCRIBE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", sorted(declarations()))
def test_every_subscribed_event_has_a_handler_and_every_handler_a_subscription(name):
    assert described()[name]["handled"] == described()[name]["subscribes"]


@pytest.mark.parametrize("name", sorted(declarations()))
def test_every_task_of_a_service_is_declared_through_the_service_api(name):
    assert described()[name]["tasks"] == described()[name]["declared"]


def test_a_decorated_step_is_its_task_with_or_without_options():
    service = Service(ServiceTopology("shop"))

    @service.task
    def add(x: int, y: int) -> int:
        return x + y

    @service.task(time_limit=5)
    def double(x: int) -> int:
        return 2 * x

    assert (add.name, add.run(2, 3), add.delay.__self__.name) == ("shop.add", 5, "shop.add")
    assert (double.name, double.time_limit, double.run(4)) == ("shop.double", 5, 8)
    assert service.celery.tasks["shop.add"] is add._get_current_object()


def test_handler_task_id_is_uuid5_of_event_and_task() -> None:
    """Redelivered events run the same handler ids: uuid5 of ``<event id>/<task name>``."""
    import uuid

    from shared.service.declaration import handler_task_id

    for n in range(2000):
        event_id, name = uuid.uuid4(), f"svc.handler_{n}"
        expected = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{event_id}/{name}"))
        assert handler_task_id(event_id, name) == handler_task_id(str(event_id), name) == expected

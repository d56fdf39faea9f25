"""The startup check finds each kind of combination that cannot work, planted in a
throwaway service, and nothing fatal in the real ones."""

import json
import subprocess
import sys
from typing import ClassVar

from shared.contracts.models import Command
from shared.core.retry import RetryPolicy
from shared.core.topology import ServiceTopology
from shared.service.declaration import Service
from shared.worker.check import _schedule, check_app


class Checkout(Command):
    task: ClassVar[str] = "shop.checkout"


class LowLimit(ServiceTopology):
    def work_queue_arguments(self) -> dict[str, object]:
        return {**super().work_queue_arguments(), "x-delivery-limit": 1}


def step() -> None:
    return None


def checkout(command: Checkout) -> None:
    return None


def shop(topology: ServiceTopology | None = None) -> Service:
    service = Service(topology or ServiceTopology("shop"))
    service.celery.conf.update(result_expires=3600, retry_delay_scale=1.0)
    return service


def kinds(service: Service, pool: str = "prefork", consumer_timeout: float = 1800) -> dict:
    return {f.kind: f.fatal for f in check_app(service.celery, pool, consumer_timeout)}


def test_a_command_whose_retries_outlive_its_result_is_fatal():
    service = shop()
    slow = RetryPolicy(autoretry_for=(OSError,), max_retries=5, default_retry_delay=1000)
    service.command(Checkout, retry=slow, time_limit=60, soft_time_limit=50)(checkout)
    assert kinds(service) == {"retries-outlive-result": True}


def test_the_check_reads_the_policy_a_task_was_declared_with_not_a_rebuilt_one():
    service = shop()
    slow = RetryPolicy(autoretry_for=(OSError,), max_retries=5, default_retry_delay=1000)
    service.command(Checkout, retry=slow, time_limit=60, soft_time_limit=50)(checkout)
    assert _schedule(service.celery.tasks[Checkout.task]) is slow


def test_a_time_limit_not_below_the_consumer_timeout_is_fatal():
    service = shop()
    service.task(time_limit=2000, soft_time_limit=1000)(step)
    assert kinds(service) == {"consumer-timeout": True}


def test_a_soft_limit_not_below_the_hard_limit_is_fatal():
    service = shop()
    service.task(time_limit=30, soft_time_limit=60)(step)
    assert kinds(service) == {"soft-limit": True}


def test_time_limits_on_a_pool_that_ignores_them_are_fatal():
    service = shop()
    service.task(time_limit=30, soft_time_limit=20)(step)
    assert kinds(service, pool="prefork") == {}
    assert kinds(service, pool="threads") == {"pool-ignores-limits": True}


def test_time_limits_a_debugging_worker_leaves_unenforced_by_its_flag_are_a_warning():
    service = shop()
    service.task(time_limit=30, soft_time_limit=20)(step)
    found = check_app(service.celery, "solo", 1800, unenforced_limits=True)
    assert {f.kind: f.fatal for f in found} == {"pool-ignores-limits-allowed": False}


def test_a_beat_entry_for_a_missing_task_is_fatal_and_one_faster_than_takeover_is_flagged():
    service = shop()
    service.celery.conf.beat_schedule = {
        "typo": {"task": "shop.nope", "schedule": 60.0},
        "fast": {"task": "celery.backend_cleanup", "schedule": 1.0},
    }
    assert kinds(service) == {"beat-unknown-task": True, "beat-takeover": False}


def test_a_delivery_limit_below_two_is_fatal():
    assert kinds(shop(LowLimit("shop"))) == {"delivery-limit": True}


def test_a_task_that_retries_forever_is_flagged():
    service = shop()
    service.celery.task(name="shop.raw", max_retries=None, shared=False)(step)
    assert kinds(service) == {"retries-forever": False}


def test_the_real_services_have_no_fatal_finding():
    """In a child process: importing the apps here would fix this session's settings."""
    done = subprocess.run(
        [sys.executable, "-m", "shared.ops", "check", "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [f for f in json.loads(done.stdout) if f["fatal"]] == []

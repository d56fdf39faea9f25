"""Generated messages over the trust boundary (``tests/fuzz/trust.py``), sent with another
service's and an upstream's credentials to a notifier worker running as its own user: no
worker exits, no e-mail reaches an address only follow-up work named, nothing that asks
for more than its task runs, and every message ends e-mailed or in the DLQ with a
documented reason.

``make test`` runs a bounded, derandomized campaign (``FUZZ_TRUST_MESSAGES``, 60); ``make
fuzz`` a long one with a random seed (``FUZZ_SEED`` to repeat it).
"""

import os
import random
import time
from collections import Counter

import amqp
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from kombu import Connection

from tests.fuzz.ledger import documented_reasons
from tests.fuzz.trust import EVIL, Attempt, attempts
from tests.support import wait_for

MESSAGES = int(os.environ.get("FUZZ_TRUST_MESSAGES", "60"))
SEED = int(os.environ.get("FUZZ_SEED") or random.randrange(2**32)) if MESSAGES > 60 else None


def generate(n: int, random_seed: int | None) -> list[Attempt]:
    got: list[Attempt] = []

    @settings(max_examples=n, derandomize=random_seed is None, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])  # fmt: skip
    @given(attempts())
    def collect(attempt: Attempt) -> None:
        got.append(attempt)

    (seed(random_seed)(collect) if random_seed is not None else collect)()
    return got


def publish_all(urls: dict[str, str], users: dict[str, str | None], batch: list[Attempt]) -> list:
    """Each attempt over its route's connection (a new one after the broker closes it for a
    message it refuses, e.g. a header table past the frame size); those the broker took."""
    sent, conns = [], {}
    try:
        for attempt in batch:
            route = attempt.route
            if route not in conns:
                conns[route] = Connection(urls[route])
                conns[route].default_channel.confirm_select()
            props = {**attempt.properties, "message_id": attempt.message_id, "delivery_mode": 2}
            if users[route]:
                props["user_id"] = users[route]
            exchange, key = (("events", "user.signed_up") if route == "upstream"
                             else ("notifier", "notifier.tasks"))  # fmt: skip
            try:
                conns[route].default_channel.basic_publish_confirm(
                    amqp.Message(attempt.body, application_headers=attempt.headers, **props),
                    exchange=exchange, routing_key=key,
                )  # fmt: skip
            except Exception:  # refused by the broker or the client: nothing to judge
                conns.pop(route).release()
                continue
            sent.append(attempt)
    finally:
        for conn in conns.values():
            conn.release()
    return sent


@pytest.fixture
def notifier(stack, creds, clean_queues):
    worker = stack.worker(
        "notifier",
        AMQP_URL=creds.amqp_url("notifier", stack.amqp_url),
        DATABASE_URL=creds.database_url("notifier", stack.database_url),
    ).start()
    yield worker
    worker.stop()
    stack.purge("reports.events")


def test_generated_messages_never_act_with_the_receivers_authority(
    stack, creds, upstream, notifier
):
    print(f"\ntrust fuzz: {MESSAGES} messages, seed {SEED if SEED is not None else 'derandomized'}")
    pid, documented = notifier.proc.pid, documented_reasons()[0]
    urls = {"another service": creds.amqp_url("signup", stack.amqp_url), "upstream": upstream}
    users = {"another service": creds.user("signup"), "upstream": None}
    started = time.monotonic()
    sent = publish_all(urls, users, generate(MESSAGES, SEED))
    dead: dict[str, str] = {}

    def settled() -> bool:
        dead.update({m.properties.get("message_id"): m.headers.get("x-dead-letter-reason")
                     for m in stack.dead_letters("notifier")})  # fmt: skip
        return all(a.message_id in dead or stack.smtp.to(a.to) for a in sent)

    wait_for(settled, timeout=60 + MESSAGES / 5, interval=1)
    outcomes = Counter(dead.get(a.message_id, "ran") for a in sent)
    print(f"published {len(sent)} of {MESSAGES}, settled in {time.monotonic() - started:.1f} s;"
          f" outcomes: {dict(sorted(outcomes.items()))}")  # fmt: skip
    assert notifier.proc.poll() is None and notifier.proc.pid == pid, notifier.output()[-3000:]
    assert "Unrecoverable error" not in notifier.output()
    assert [m for m in stack.smtp.messages if any(EVIL in to for to in m["to"])] == []
    ran_anyway = [a for a in sent if (a.asks or a.protocol_1) and stack.smtp.to(a.to)]
    assert ran_anyway == [], ran_anyway[:3]
    assert all(a.message_id in dead for a in sent if a.asks or a.protocol_1)
    assert set(dead.values()) <= documented, set(dead.values()) - documented

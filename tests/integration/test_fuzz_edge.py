"""Generated messages at the AMQP edge: each ends handled, retrying or dead-lettered with a
reason from the documented table (docs/architecture/failure-semantics.md), no worker exits,
and the next good event is handled.

``make test`` runs a bounded, derandomized campaign (``FUZZ_MESSAGES``, 300, of which
``FUZZ_POISONED``, 40, have property bytes py-amqp may not decode: ``tests/fuzz/tables.py``);
``make fuzz N=20000`` runs a long one with a random seed (``FUZZ_SEED`` to repeat it) and
prints the outcome table and every distinct failure, shrunk. See ``tests/fuzz``.
"""

import os
import random

import pytest
from sqlalchemy import create_engine

from shared.core.db import migrate
from shared.ops.commands.common import OPS_MIGRATIONS
from tests.fuzz.campaign import fuzz, generate
from tests.fuzz.messages import poisoned
from tests.fuzz.runner import EdgeFuzzer

LONG = "FUZZ_MESSAGES" in os.environ
#: Messages whose property bytes py-amqp may not decode (``tests/fuzz/tables.py``), bounded.
POISONED = int(os.environ.get("FUZZ_POISONED", "40"))
MESSAGES = int(os.environ.get("FUZZ_MESSAGES", "300"))
SEED = int(os.environ.get("FUZZ_SEED") or random.randrange(2**32)) if LONG else None
BATCH = int(os.environ.get("FUZZ_BATCH", "200" if LONG else "100"))


@pytest.fixture
def fuzzer(stack, clean_queues):
    migrate(stack.database_url, "ops", OPS_MIGRATIONS)
    engine = create_engine(stack.database_url)
    fuzzer = EdgeFuzzer(stack, engine)
    try:  # the workers started before one that failed to start are stopped too
        yield fuzzer.start()
    finally:
        fuzzer.stop()
        engine.dispose()


def test_generated_messages_end_handled_retrying_or_dead_lettered_and_no_worker_exits(fuzzer):
    print(f"\nfuzz: {MESSAGES} messages, {POISONED} of them with property bytes py-amqp may"
          f" not decode, seed {SEED if SEED is not None else 'derandomized'}")  # fmt: skip
    generated = generate(MESSAGES - POISONED, SEED) + generate(POISONED, SEED, poisoned())
    report = fuzz(fuzzer, generated, BATCH, stop_at_first=not LONG)
    print(report.table())
    if report.failures:
        print(report.describe())
    assert not report.failures, report.describe()
    assert report.outcomes["dead:undecodable-frame"] > 0, "the property bytes reach the guard"

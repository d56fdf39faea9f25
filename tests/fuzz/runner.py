"""Publish generated messages in batches to real workers, replay their dead letters, judge.

One batch: purge, publish every message with a plain AMQP client (plus one good event
last), wait until each has a trace, replay every DLQ with ``python -m shared.ops dlq
replay``, wait again, then judge: the ledger's problems, the worker PIDs, "Unrecoverable
error" in a worker's log, duplicate e-mails (the SMTP sink's Message-IDs), and the good
event handled by both subscribers.
"""

import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

import amqp
from kombu import Connection
from sqlalchemy import Engine

from shared.core.topology import SERVICES, UNROUTED
from shared.worker.frames import install
from tests.fuzz.ledger import Verdict, judge, observe, settled
from tests.fuzz.messages import Published, good_signup
from tests.raw_properties import RawMessage, encode

#: How long a message may take to leave a trace (a send retried 5 times takes about 10 s).
SETTLE_TIMEOUT = 20.0
SUBSCRIBERS = [n for n, t in SERVICES.items() if "user.signed_up" in t.subscribes]


class EdgeFuzzer:
    def __init__(self, stack: Any, engine: Engine) -> None:
        self.stack, self.engine = stack, engine
        self.workers: dict[str, Any] = {}
        self.pids: dict[str, int] = {}
        self.outcomes: Counter[str] = Counter()

    def start(self) -> "EdgeFuzzer":
        # The ledger reads DLQs as the operator's tools do: a message whose properties
        # py-amqp cannot decode reaches one natively (its ``expiration`` passed in a work
        # queue) with those properties, and must be read, not raised (``shared.worker.frames``).
        install()
        for name in SERVICES:
            self._start(name)
        return self

    def _start(self, name: str) -> None:
        self.workers[name] = self.stack.worker(name).start()
        self.pids[name] = self.workers[name].proc.pid

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()

    # -- one batch -------------------------------------------------------------------------

    def run(self, batch: list[Published]) -> tuple[list[str], list[Published]]:
        """Every problem the batch shows, and the messages named in them (none when only a
        worker's death shows it); the outcome counts accumulate on ``self``."""
        problems = self._revive()
        queues = [UNROUTED]
        for topo in SERVICES.values():
            queues += [q.name for q in topo.work_queues()] + [topo.dlq]
        self.stack.purge(*queues)
        mails_before = len(self.stack.smtp.messages)
        logs_before = {n: len(w.output()) for n, w in self.workers.items()}

        good = good_signup(f"good-{uuid.uuid4().hex[:8]}@example.com")
        sent = self._publish_all([*batch, good])
        verdict = self._settle(sent)
        problems += verdict.problems  # before the replay: each message its own trace
        dead = {mid for (mid, _), o in verdict.outcomes.items() if o.startswith("dead:")}
        try:
            if self._replay():
                verdict = self._settle(sent, dead)
        except AssertionError as exc:  # the replay tool failed on one of these dead letters
            problems.append(str(exc)[-3000:])

        problems += [p for p in verdict.problems if p not in problems]
        for (mid, _service), outcome in verdict.outcomes.items():
            self.outcomes[outcome] += mid != good.message_id
        good_outcomes = {verdict.outcomes.get((good.message_id, s)) for s in SUBSCRIBERS}
        if good_outcomes != {"handled"} or len(self.stack.smtp.to(_to(good))) != 1:
            problems.append(f"the next good event was not handled once: {good_outcomes}")
        problems += self._workers_intact(logs_before)
        problems += _duplicate_mails(self.stack.smtp.messages[mails_before:])
        return problems, [m for m in verdict.culprits if m is not good]

    def _publish_all(self, messages: list[Published]) -> list[Published]:
        """Publish each with confirms over one connection (a new one after the broker
        closes it for a message it refuses); the messages the broker confirmed."""
        sent, conn = [], None
        try:
            for message in messages:
                if conn is None:
                    conn = Connection(self.stack.amqp_url)
                    channel = conn.channel()
                    channel.confirm_select()
                props = dict(message.properties, message_id=message.message_id, delivery_mode=2)
                if message.headers is not None:
                    props["application_headers"] = message.headers
                try:
                    channel.basic_publish_confirm(
                        _wire(message, props),
                        exchange=message.exchange,
                        routing_key=message.routing_key,
                    )
                except Exception as exc:  # the broker or the client refused it: no trace due
                    self.outcomes[f"not-published:{type(exc).__name__}"] += 1
                    conn.release()
                    conn = None
                    continue
                sent.append(message)
        finally:
            if conn is not None:
                conn.release()
        return sent

    def _settle(self, sent: list[Published], dead_before: set[str] | None = None) -> Verdict:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            verdict = judge(sent, observe(self.stack.amqp_url, self.engine), dead_before)
            if settled(verdict) or time.monotonic() > deadline:
                return verdict
            time.sleep(0.5)

    def _replay(self) -> int:
        """Replay every DLQ as an operator would; how many dead letters went back."""
        replayed = 0
        for name in SERVICES:
            done = subprocess.run(
                [sys.executable, "-m", "shared.ops", "dlq", "replay", name],
                env=self.stack.env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if done.returncode != 0:
                raise AssertionError(f"dlq replay {name} failed:\n{done.stdout}\n{done.stderr}")
            replayed += int(re.search(r"^replayed (\d+) of", done.stdout, re.M).group(1))
        self.outcomes["replayed (then judged again)"] += replayed
        return replayed

    def _revive(self) -> list[str]:
        problems = []
        for name, worker in self.workers.items():
            if worker.proc.poll() is not None:
                problems.append(f"{name} worker exited:\n{worker.output()[-2000:]}")
                self._start(name)
        return problems

    def _workers_intact(self, logs_before: dict[str, int]) -> list[str]:
        problems = []
        for name, worker in self.workers.items():
            log = worker.output()[logs_before[name] :]
            if worker.proc.poll() is not None or worker.proc.pid != self.pids[name]:
                problems.append(f"{name} worker exited:\n{log[-2000:]}")
            elif "Unrecoverable error" in log:
                problems.append(f"{name} worker: Unrecoverable error:\n{log[-2000:]}")
        return problems


def _wire(message: Published, props: dict[str, Any]) -> amqp.Message:
    """The message as published: its ``raw`` property fields as the bytes drawn."""
    if message.raw:
        return RawMessage(message.body, encode(props, message.raw))
    return amqp.Message(message.body, **props)


def _to(message: Published) -> str:
    return re.search(rb'"email": "([^"]+)"', message.body).group(1).decode()


def _duplicate_mails(mails: list[dict]) -> list[str]:
    ids = Counter(
        m.group(1) for mail in mails if (m := re.search(r"(?mi)^Message-ID:\s*(\S+)", mail["data"]))
    )
    return [f"e-mail {mid} was sent {n} times" for mid, n in ids.items() if n > 1]


def isolate(fuzzer: EdgeFuzzer, batch: list[Published]) -> list[Published]:
    """The messages of a failing batch that fail alone, found by halving it (a worker's
    death names no message)."""
    if len(batch) == 1:
        return batch if fuzzer.run(batch)[0] else []
    half = len(batch) // 2
    return [m for part in (batch[:half], batch[half:]) for m in isolate(fuzzer, part)]

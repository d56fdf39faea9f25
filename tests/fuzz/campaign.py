"""A fuzz campaign: generate messages with Hypothesis, run them in batches, report.

Generation is Hypothesis's (``messages()``), derandomized unless a seed is given, so the
bounded run in ``make test`` publishes the same messages every time. Running them one
Hypothesis example at a time would cost a broker round trip each; instead they run in
batches, and a failing batch is narrowed to the messages that fail alone (``isolate``),
then each is shrunk field by field (``shrink``): the printed example is the smallest
message found that still breaks the invariant.
"""

from collections import Counter
from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.strategies import SearchStrategy

from tests.fuzz.messages import Published, messages
from tests.fuzz.runner import EdgeFuzzer, isolate

#: Runs one shrink may spend (each a broker round trip, up to two settle timeouts).
SHRINK_RUNS = 6


def generate(
    n: int, random_seed: int | None = None, strategy: SearchStrategy | None = None
) -> list[Published]:
    """``n`` messages of ``strategy`` (``messages()``)."""
    got: list[Published] = []

    @settings(max_examples=n, derandomize=random_seed is None, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])  # fmt: skip
    @given(strategy if strategy is not None else messages())
    def collect(message: Published) -> None:
        got.append(message)

    (seed(random_seed)(collect) if random_seed is not None else collect)()
    return got


def _simpler(message: Published) -> list[Published]:
    """One step simpler each: a header or a property fewer."""
    out = []
    for name in message.headers or {}:
        if name not in ("task", "id"):
            out.append(replace(message, headers={k: v for k, v in message.headers.items()
                                                 if k != name}))  # fmt: skip
    for name in message.raw:
        out.append(replace(message, raw={k: v for k, v in message.raw.items() if k != name}))
    for name in message.properties:
        out.append(replace(message, properties={k: v for k, v in message.properties.items()
                                                if k != name}))  # fmt: skip
    return out


def shrink(fuzzer: EdgeFuzzer, message: Published) -> tuple[Published, list[str]]:
    """The smallest message that still fails, greedily, and its problems."""
    problems, _ = fuzzer.run([message])
    runs, progress = 1, True
    while progress and runs < SHRINK_RUNS:
        progress = False
        for candidate in _simpler(message)[: SHRINK_RUNS - runs]:
            runs += 1
            found, _ = fuzzer.run([replace(candidate, message_id=Published.fresh_id())])
            if found:
                message, problems, progress = candidate, found, True
                break
    return message, problems


@dataclass
class Report:
    messages: int = 0
    outcomes: Counter = field(default_factory=Counter)
    failures: dict[str, tuple[Published | None, list[str]]] = field(default_factory=dict)

    def table(self) -> str:
        lines = ["| outcome | count |", "|---|---:|", f"| messages generated | {self.messages} |"]
        lines += [f"| {k} | {v} |" for k, v in sorted(self.outcomes.items())]
        lines.append(f"| distinct failures | {len(self.failures)} |")
        return "\n".join(lines)

    def describe(self) -> str:
        parts = []
        for key, (message, problems) in self.failures.items():
            parts.append(f"== {key}\n   shrunk: {message!r}\n   " + "\n   ".join(problems[:5]))
        return "\n".join(parts)


def _key(problem: str) -> str:
    return problem.split(" Published(")[0].split("\n")[0][:120]


def fuzz(fuzzer: EdgeFuzzer, generated: list[Published], batch: int, stop_at_first: bool) -> Report:
    report = Report(messages=len(generated))
    for start in range(0, len(generated), batch):
        chunk = generated[start : start + batch]
        problems, culprits = fuzzer.run(chunk)
        print(f"fuzz: {start + len(chunk)}/{len(generated)} published, "
              f"{len(problems)} problem(s)", flush=True)  # fmt: skip
        for problem in problems:
            print(f"  {problem[:1500]}", flush=True)
        named = {_key(p): next((m for m in culprits if repr(m) in p), None) for p in problems}
        if any(m is None for m in named.values()):  # a worker died: find who did it
            suspects = isolate(fuzzer, chunk)
            named.update(
                {k: suspects[0] if suspects else None for k, m in named.items() if m is None}
            )
        for key, message in named.items():
            if key in report.failures:
                continue
            shrunk, found = shrink(fuzzer, message) if message else (None, [])
            report.failures[key] = (shrunk, found or [p for p in problems if _key(p) == key])
        if problems and stop_at_first:
            break
    report.outcomes = fuzzer.outcomes
    return report

"""What a chord costs on the PostgreSQL result backend, next to its group alone.

The database backend has no native chord join: the producer sends ``celery.chord_unlock``
with a 1 s countdown, and it retries every second (``result_chord_retry_interval``) until
the header is done. With quorum queues each of those waits is native delayed delivery
(the ``celery_delayed_*`` queues), not a message held in a worker's memory.

Figures: ``.venv/bin/pytest tests/integration/test_reports_chord_cost.py -s``.
"""

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZES, ROUNDS = (2, 24), 5

#: A client timing, ROUNDS times each, a group of n tasks and the same group as the header
#: of a chord, from sending to the last result (polled every 10 ms), for each n in SIZES.
MEASURE = f"""
import json, time
from celery import chord, group
from services.reports.app import app
add, total = app.tasks["reports.add"], app.tasks["reports.sum_results"]
def timed(sig):
    start = time.monotonic()
    value = sig.apply_async().get(timeout=60, interval=0.01)
    return time.monotonic() - start, value
header = lambda n: group(add.s(i, i) for i in range(n))
timed(header(2))  # warm up connections and the pool
print(json.dumps({{n: {{
    "group": [timed(header(n)) for _ in range({ROUNDS})],
    "chord": [timed(chord(header(n), total.s())) for _ in range({ROUNDS})],
}} for n in {SIZES}}}))
"""


def test_a_chord_completes_within_its_unlock_polls_of_the_group_alone(stack, reports_worker):
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE], cwd=ROOT, env=stack.env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    lines = []
    for n in SIZES:
        group_runs, chord_runs = runs[str(n)]["group"], runs[str(n)]["chord"]
        assert all(value == list(range(0, 2 * n, 2)) for _, value in group_runs)
        assert all(value == n * (n - 1) for _, value in chord_runs)
        group_s = statistics.median(t for t, _ in group_runs)
        chord_s = statistics.median(t for t, _ in chord_runs)
        lines.append(
            f"{n:>2}-task group: median {group_s * 1000:.0f} ms; as a chord header with a sum"
            f" callback: {chord_s * 1000:.0f} ms (+{(chord_s - group_s) * 1000:.0f} ms)"
        )
        # The first unlock looks after 1 s and then every second: a chord never completes
        # sooner than 1 s, and at most about one poll (plus its callback) after its header.
        assert 1.0 <= chord_s < group_s + 2.0
    log = reports_worker.output().splitlines()
    polls = sum("celery.chord_unlock[" in line and line.endswith("received") for line in log)
    print("\n" + "\n".join(lines), f"\nchord_unlock deliveries for {2 * ROUNDS} chords: {polls}")

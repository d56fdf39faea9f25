"""Where each millisecond of a signup goes: py-spy samples sorted into activities, scaled
to the CPU row's measured ms per signup.

``python -m bench.attribute DIR [--cpu FILE]``: ``DIR`` holds collapsed stacks, one file
per process kind (``python bench/signup.py --only-cpu --profile DIR --raw --json FILE``
writes both); ``FILE`` is that run's JSON (its CPU row). Each sample goes to the
activity of its deepest frame that names one (``ACTIVITIES``, in the order a stack is
read from its leaf); a sample naming none goes to the first of ``FALLBACK`` it names, else
"other". A pool child's stack starts where it was forked: the parent's frames above the
fork are not the child's work. Samples are of the thread holding the GIL (``--gil``), so
time spent in C with the GIL released (waiting on a socket, libpq's I/O) is outside the
fractions, which are scaled to the whole measured CPU.
"""

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

#: (activity, frame markers): a frame names an activity when it contains a marker.
ACTIVITIES: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("(logging/",)),
    ("metrics (Prometheus)", ("shared/ops/metrics.py", "(prometheus_client/")),
    ("task events for Flower (-E)", ("(celery/events/",)),
    ("Flower's search index", ("(flower/utils/search.py",)),
    ("Flower's state and metrics", ("(flower/",)),
    ("contract validation (pydantic)", ("(pydantic/", "(email_validator/")),
    ("result rows (PostgreSQL, written behind)",
     ("shared/worker/results.py", "shared/worker/pending_rows.py", "(celery/backends/")),
    ("SMTP", ("(smtplib.py", "services/notifier/mailer.py")),
    ("SMS over HTTP", ("services/signup/sms.py", "services/notifier/sms.py", "(httpx/")),
    ("delivery ledger (PostgreSQL)", ("services/notifier/deliveries.py",)),
    ("read-model fact (PostgreSQL)", ("services/reports/handlers.py",)),
    ("user row + outbox row (PostgreSQL)", ("services/signup/signup.py",)),
    ("publish, confirmed", ("shared/service/publishing.py",)),
    ("outbox relay", ("shared/service/outbox.py", "shared/service/relaying.py")),
    ("receive-path checks", ("shared/worker/receive.py", "shared/worker/wire.py",
                             "shared/worker/trust.py")),
    ("handler dispatch (platform)", ("shared/service/", "shared/worker/inline.py")),
    ("Celery tracer (run a task)", ("(celery/app/trace.py",)),
    ("HTTP server (uvicorn, Starlette, FastAPI)",
     ("(uvicorn/", "(h11/", "(starlette/", "(fastapi/", "(anyio/")),
]  # fmt: skip
#: Read only when no frame of a stack names an activity above.
FALLBACK: list[tuple[str, tuple[str, ...]]] = [
    ("prefork pool (IPC to and from children)", ("(billiard/", "(celery/concurrency/")),
    ("Celery consumer (receive, strategy, ack)", ("(celery/worker/", "(kombu/", "(amqp/")),
    ("PostgreSQL driver (other)", ("(sqlalchemy/", "(psycopg/")),
]
FORK = "BaseProcess._bootstrap (billiard/process.py"


def activity(frames: list[str]) -> str:
    """The activity a sample's stack (root first) belongs to."""
    for at in range(len(frames) - 1, -1, -1):
        if FORK in frames[at]:
            frames = frames[at:]
            break
    for table in (ACTIVITIES, FALLBACK):
        for frame in reversed(frames):
            for name, markers in table:
                if any(marker in frame for marker in markers):
                    return name
    return "other"


def shares(collapsed: Path) -> dict[str, float]:
    """Each activity's fraction of the samples in one collapsed-stacks file."""
    counts: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[activity(stack.split(";"))] += int(n)
    total = sum(counts.values()) or 1
    return {name: n / total for name, n in counts.most_common()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profiles", type=Path, help="a folder of flame-<program>.txt files")
    parser.add_argument("--cpu", type=Path, help="the signup bench's JSON (its CPU row)")
    args = parser.parse_args(argv)
    measured: dict[str, float] = {}
    if args.cpu:
        row = next(r for r in json.loads(args.cpu.read_text()) if "cpu_ms_per_signup" in r)
        measured = row["cpu_ms_per_signup"]
    for collapsed in sorted(args.profiles.glob("flame-*.txt")):
        kind = collapsed.stem.removeprefix("flame-")
        ms = measured.get(kind)
        print(f"{kind}" + (f": {ms:g} ms CPU per signup" if ms is not None else ""))
        for name, share in shares(collapsed).items():
            scaled = f"{share * ms:6.2f} ms" if ms is not None else ""
            print(f"  {100 * share:5.1f} %  {scaled}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench.attribute sorts a sample by its deepest frame that names an activity, and a pool
child's sample by its own frames only (not the parent's, above the fork)."""

from bench.attribute import activity

PARENT = ["main (celery/__main__.py:1)", "receive (shared/worker/receive.py:9)",
          "Pool._create_worker_process (billiard/pool.py:3)"]  # fmt: skip
CHILD = ["BaseProcess._bootstrap (billiard/process.py:7)", "Worker.workloop (billiard/pool.py:5)"]


def test_the_deepest_named_frame_decides() -> None:
    stack = [*PARENT, *CHILD, "trace_task (celery/app/trace.py:1)",
             "Deliveries._claim (services/notifier/deliveries.py:2)",
             "Cursor.execute (psycopg/cursor.py:3)"]  # fmt: skip
    assert activity(stack) == "delivery ledger (PostgreSQL)"


def test_a_child_idle_in_its_loop_is_not_the_parents_receive_path() -> None:
    assert activity([*PARENT, *CHILD, "_recv (billiard/pool.py:9)"]) == (
        "prefork pool (IPC to and from children)"
    )
    assert activity(PARENT) == "receive-path checks"


def test_a_stack_naming_nothing_is_other() -> None:
    assert activity(["<module> (x.py:1)"]) == "other"

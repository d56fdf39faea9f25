"""`make demo`: real signups through the running system, and what became of each.

Starts everything `make run` starts (infra/run.py: the signup API, the three services'
workers, beat, the outbox relay, Flower, the SMTP sink and the SMS gateway stub), signs
up a few users through ``POST /users/signup``, then prints one line per user: the HTTP
answer, the welcome e-mails the SMTP sink received, and what the reports service
counted (the signup, and the notification notifier reported). Exits 0 only if every
user got exactly one welcome e-mail and was counted once; stops everything either way.
"""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text

from infra.processes import ROOT, wait_for
from shared.core.settings import get_settings

USERS = 5
API = "http://127.0.0.1:8000"
COUNTS = """SELECT count(*) FILTER (WHERE type = 'user.signed_up'),
                   count(*) FILTER (WHERE type = 'notification.sent' AND kind = 'welcome_email')
            FROM reports.facts WHERE subject = :email"""


def api_ready(run: subprocess.Popen) -> bool:
    if run.poll() is not None:
        raise RuntimeError(f"make run exited ({run.returncode})")
    try:
        return httpx.get(f"{API}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def welcome_mails(sink_output: str, email: str) -> int:
    """The welcome e-mails to ``email`` in what the SMTP sink printed."""
    return sink_output.count(f"mail to {email}: Subject: Welcome")


def sign_up_and_check(api: str, engine: Engine, mails: Callable[[str], int]) -> bool:
    """USERS signups through ``api``; a line per user; True only if each got one welcome
    e-mail (``mails(email)`` counts them) and was counted once by the reports service.
    Shared by `make demo` and `make compose-demo` (infra/compose_demo.py)."""
    run_id = uuid.uuid4().hex[:6]
    number = uuid.uuid4().int % 10**5  # phone numbers are digits only
    emails = [f"user{i}-{run_id}@example.com" for i in range(USERS)]
    answers = {}
    for i, email in enumerate(emails):
        body = {"email": email, "name": f"Demo user {i}", "phone": f"+8210{number:05d}{i:03d}"}
        answers[email] = httpx.post(f"{api}/users/signup", json=body, timeout=30).status_code

    def counts(email: str) -> tuple[int, int]:
        with engine.connect() as conn:
            return tuple(conn.execute(text(COUNTS), {"email": email}).one())

    def done() -> bool:
        return all(mails(e) >= 1 and counts(e) == (1, 1) for e in emails)

    with contextlib.suppress(AssertionError):
        wait_for(done, timeout=120, interval=0.5)
    print(f"{'user':<30} {'HTTP':>5} {'welcome e-mails':>16} {'reported signups':>17}"
          f" {'reported e-mails':>17}")  # fmt: skip
    ok = True
    for email in emails:
        (signups, sent), mailed = counts(email), mails(email)  # judged as printed
        ok &= answers[email] == 201 and mailed == 1 and (signups, sent) == (1, 1)
        print(f"{email:<30} {answers[email]:>5} {mailed:>16} {signups:>17} {sent:>17}")
    return ok


def main() -> int:
    logs = Path(tempfile.mkdtemp(prefix="eventful-demo-"))
    output = logs / "run.out"
    with open(output, "wb") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "infra.run", "--logs", str(logs)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    engine = create_engine(get_settings().database_url)
    try:
        wait_for(lambda: api_ready(run), timeout=180, interval=0.5)
        ok = sign_up_and_check(
            API, engine, lambda email: welcome_mails(output.read_text(errors="replace"), email)
        )
        print(f"{'all delivered and counted once' if ok else 'NOT all delivered'}; logs in {logs}")
        return 0 if ok else 1
    finally:
        os.killpg(run.pid, signal.SIGINT)
        run.wait(90)
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())

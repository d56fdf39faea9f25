"""A worker process imports what it runs, not what the platform's tools use: every module
loaded before the fork is resident in the main process and in each pool child, so a
tool's library loaded there is paid for once per process (issue 28: worker memory).
"""

import json
import os
import subprocess
import sys

import pytest

from infra.processes import ROOT

#: Libraries the platform uses outside its workers: alembic (with mako) runs migrations
#: from the CLI and ``make migrate``; FastAPI, Starlette and uvicorn serve the signup API;
#: httpx (with rich and pygments, its command line's) talks to the management API.
#: (SQLAlchemy's ORM stays: Celery's database backend, which the result backend extends,
#: reads results through it.)
NOT_IN_A_WORKER = ("alembic", "mako", "fastapi", "starlette", "uvicorn", "httpx", "rich")


@pytest.mark.parametrize("service", ["signup", "notifier", "reports"])
def test_a_worker_app_loads_no_tool_library(service: str) -> None:
    code = (
        "import json, sys\n"
        f"import services.{service}.app\n"
        "import shared.ops.metrics\n"  # the worker's -I module
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "LOCAL_MODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    found = [m for m in loaded for lib in NOT_IN_A_WORKER if m == lib or m.startswith(lib + ".")]
    assert not found, found

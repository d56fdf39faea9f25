"""A test, bench or chaos process killed before its cleanup leaves its vhost behind; the next
one to start deletes it (too many leftover quorum queues stop the broker taking connections)."""

import socket
import subprocess
import sys
import uuid

from infra.scratch import put_scratch_vhost, sweep_scratch_vhosts
from shared.ops.management import Management


def test_a_killed_owner_s_vhost_is_swept_and_a_running_owner_s_is_kept(stack):
    management = Management(stack.management_url)
    dead, alive = f"test-dead-{uuid.uuid4().hex[:6]}", f"test-alive-{uuid.uuid4().hex[:6]}"
    code = (
        "import sys; from infra.scratch import put_scratch_vhost;"
        "from shared.ops.management import Management;"
        "put_scratch_vhost(Management(sys.argv[1]), sys.argv[2])"
    )
    put_scratch_vhost(management, alive)
    owner = subprocess.run([sys.executable, "-c", code, stack.management_url, dead], env=stack.env)
    assert owner.returncode == 0
    try:
        marks = {v["name"]: v.get("description") for v in management.vhosts()}
        assert marks[dead].startswith("eventful scratch: pid=")
        assert marks[dead].endswith(f" host={socket.gethostname()}")
        swept = sweep_scratch_vhosts(management)
        names = {v["name"] for v in management.vhosts()}
        assert dead in swept and dead not in names
        assert alive in names and stack.vhost in names
    finally:
        for vhost in (dead, alive):
            if vhost in {v["name"] for v in management.vhosts()}:
                management.delete_vhost(vhost)

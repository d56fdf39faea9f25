"""Scratch vhosts for tests, benches and chaos runs, and the sweep of those whose owner died.

Each scratch vhost (about 36 quorum queues) is removed by its owner on a normal exit; an owner
killed before that leaves it behind. On RabbitMQ 3.10 a few hundred leftover quorum queues
exhaust the node's file handle cache and it silently stops accepting connections, so every
owner marks its vhost with its PID and host, and every new owner first deletes the vhosts of
owners that no longer run on this host.
"""

import os
import re
import socket

from shared.ops.management import Management, ManagementError

_MARK = re.compile(r"^eventful scratch: pid=(\d+) host=(\S+)$")


def put_scratch_vhost(management: Management, vhost: str) -> None:
    """Create ``vhost`` marked as owned by this process."""
    sweep_scratch_vhosts(management)
    mark = f"eventful scratch: pid={os.getpid()} host={socket.gethostname()}"
    management.put_vhost(vhost, description=mark)


def sweep_scratch_vhosts(management: Management) -> list[str]:
    """Delete the scratch vhosts whose owner no longer runs on this host; their names."""
    swept = []
    for vhost in management.vhosts():
        mark = _MARK.match(vhost.get("description") or "")
        if not mark or mark[2] != socket.gethostname() or _alive(int(mark[1])):
            continue
        try:
            management.delete_vhost(vhost["name"])
        except ManagementError as exc:
            if exc.status != 404:  # another sweeper was first
                raise
        swept.append(vhost["name"])
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""The platform is a library: it discovers services and names none of them."""

import re
from pathlib import Path
from typing import ClassVar

import contracts  # noqa: F401  the system's event contracts, whatever ran before
from shared.contracts.models import Command, event_types
from shared.core.topology import ServiceTopology
from shared.worker.routing import router_for

SHARED = Path(__file__).resolve().parents[2] / "shared"


def test_no_platform_file_names_a_service():
    named = [
        f"{path.relative_to(SHARED.parent)}:{n}: {line.strip()}"
        for path in sorted(SHARED.rglob("*"))
        if path.is_file() and path.suffix in {".py", ".mako", ".md", ".txt"}
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\b(signup|notifier|reports)\b", line)
    ]
    assert named == []


def test_a_service_named_like_an_event_prefix_does_not_capture_the_event():
    assert "user.signed_up" in event_types()  # its contract is known (alone, as in the suite)
    route = router_for(ServiceTopology("user", publishes=("user.signed_up",)), {})
    assert route("user.signed_up", (), {}, {})["exchange"] == "events"


class Charge(Command):
    task: ClassVar[str] = "billing.charge"


def test_a_command_goes_to_the_owner_its_contract_names_even_outside_the_system():
    route = router_for(ServiceTopology("shop"), {})
    assert route("billing.charge", (), {}, {}) == {
        "exchange": "billing",
        "exchange_type": "topic",
        "routing_key": "billing.tasks",
    }
    assert route("shop.anything", (), {}, {}) == {"queue": "shop.tasks"}

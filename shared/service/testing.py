"""A failure-path test kit for services built on the platform: run a handler in process.

    harness = Harness(service, mailer=FakeMailer())
    harness.handle("mail.send_welcome_email", event=event.model_dump(mode="json"))
    assert harness.published == [...]

The message goes through the same contract validation as in a worker (an invalid one
raises ``InvalidMessage``, which a worker dead-letters) and the handler gets its
dependencies by name, as in a worker, from the fakes given; ``publish`` and ``send``
are recorded. No broker, no database, no Celery: promises about those belong in tests
on the real servers (``tests/support.py``).
"""

from typing import Any

from celery.exceptions import Reject

from shared.contracts.evolution import read_as
from shared.contracts.models import Event
from shared.service.declaration import Service
from shared.service.handler import InvalidMessage


class Harness:
    def __init__(self, service: Service, **fakes: Any) -> None:
        self.service = service
        self.published: list[Any] = []
        self.sent: list[Any] = []
        self.fakes = {"publish": self.published.append, "send": self.sent.append, **fakes}

    def handle(self, task_name: str, **kwargs: Any) -> Any:
        """Run the handler of ``task_name`` on a message in its wire form (``kwargs``)."""
        handler = self.service.handlers[task_name]
        try:
            message = handler.parse(kwargs)
        except Reject as rejected:
            reason = rejected.reason  # type: ignore[attr-defined]  # not in celery-types
            raise InvalidMessage(str(reason)) from None
        missing = [d for d in handler.deps if d not in self.fakes]
        if missing:
            raise LookupError(f"{task_name} needs {', '.join(missing)}: pass them as fakes")
        return handler.fn(message, **{d: self.fakes[d] for d in handler.deps})

    def handle_event(self, event: Any) -> dict[str, Any]:
        """Run every handler of ``event``'s type, as its entry task would dispatch it: in
        the version each handler was written for (``shared.contracts.evolution``)."""
        return {
            name: self.handle(name, event=read_as(event, handler.contract).model_dump(mode="json"))
            for name, handler in self.service.handlers.items()
            if handler.key == "event"
            and issubclass(handler.contract, Event)
            and handler.contract.model_fields["type"].default == event.type
        }

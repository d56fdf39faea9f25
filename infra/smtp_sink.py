"""A real SMTP server on loopback that keeps what it receives, so tests and demos can read
mail back. Never a mock: the notifier speaks SMTP to it exactly as to a production relay."""

import argparse
import asyncio
import threading
import time
from typing import Any, TextIO

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from infra.processes import free_port


class _BusyAtTheGreeting(SMTP):
    """aiosmtpd's server, except that while the sink is ``busy`` it turns connections away
    as a loaded MTA does: a new one is answered ``421`` instead of the ``220`` greeting, a
    session it already has ``421`` to its next ``NOOP`` or ``MAIL``; then it closes them."""

    async def _handle_client(self) -> None:  # aiosmtpd 1.4: where the greeting is sent
        if not await self._turned_away():
            await super()._handle_client()

    async def smtp_NOOP(self, arg: str) -> None:  # noqa: N802 (aiosmtpd's command hook)
        self.event_handler.noops += 1
        if not await self._turned_away():
            await super().smtp_NOOP(arg)

    async def smtp_MAIL(self, arg: str) -> None:  # noqa: N802 (aiosmtpd's command hook)
        if not await self._turned_away():
            await super().smtp_MAIL(arg)

    async def _turned_away(self) -> bool:
        if self.event_handler.busy <= 0:
            return False
        self.event_handler.busy -= 1
        await self.push("421 4.3.2 Service busy, try again later")
        self.transport.close()
        return True


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _BusyAtTheGreeting(self.handler, **self.SMTP_kwargs)


class SmtpSink:
    """A real SMTP server on loopback that keeps what it receives, for tests to read back."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.messages: list[dict[str, Any]] = []
        self.delay = 0.0  # seconds to hold every message before answering
        self.receiving = 0  # messages whose DATA has arrived and await an answer
        self.refused: set[str] = set()  # recipients answered 550, like an unknown mailbox
        self.busy = 0  # how many next greetings, NOOPs or MAILs are answered 421 (then closed)
        self.noops = 0  # NOOP commands received
        self._lock = threading.Lock()
        self.controller = _Controller(self, hostname=host, port=port or free_port())

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: N802
        if address in self.refused:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd API)
        self.receiving += 1
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.receiving -= 1
        if server.transport is None or server.transport.is_closing():
            return "451 client went away before the answer"  # like a real MTA: not accepted
        with self._lock:
            self.messages.append(
                {
                    "to": list(envelope.rcpt_tos),
                    "data": envelope.content.decode(errors="replace"),
                    "peer": session.peer,  # the client's (host, port): one per connection
                }
            )
        return "250 OK"

    def start(self) -> "SmtpSink":
        self.controller.start()
        return self

    @property
    def port(self) -> int:
        return self.controller.port

    def stop(self) -> None:
        self.controller.stop()

    def since(self, seen: int) -> list[dict[str, Any]]:
        """The messages received after the first ``seen``: count what you read, not
        ``len(messages)`` afterwards, which includes what arrived in between."""
        with self._lock:
            return self.messages[seen:]

    def to(self, address: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if address in m["to"]]


def print_new(sink: SmtpSink, seen: int, out: TextIO | None = None) -> int:
    """Print each message after the first ``seen`` (recipients and subject); the new count."""
    new = sink.since(seen)
    for message in new:
        subject = next(
            (line for line in message["data"].splitlines() if line.startswith("Subject:")),
            "Subject: (none)",
        )
        print(f"mail to {', '.join(message['to'])}: {subject}", file=out, flush=True)
    return seen + len(new)


def main() -> None:
    """Run the sink in the foreground, printing each message's recipients and subject."""
    parser = argparse.ArgumentParser(description="an SMTP sink for local runs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args()
    sink = SmtpSink(port=args.port, host=args.host).start()
    print(f"SMTP sink listening on {args.host}:{args.port}", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            seen = print_new(sink, seen)
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()


if __name__ == "__main__":
    main()

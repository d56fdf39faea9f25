"""A real HTTP SMS gateway stub on loopback, for local runs and tests.

``POST /messages`` with JSON ``{"to": "+8210...", "text": "..."}`` answers 201 with
``{"id": ...}`` and keeps the message. Tests steer it: ``status`` (answer every request
with this code instead, e.g. 503 or 400), ``retry_after`` (a ``Retry-After`` header on
those answers), ``delay`` (seconds before answering).
``GET /messages`` lists what it kept; ``connections`` counts the TCP connections it
accepted. It speaks HTTP/1.1 with keep-alive, as a production gateway does, so a client
reuses its connection; Nagle is off on its sockets (``disable_nagle_algorithm``): it
writes headers and body separately, and with Nagle a kept-alive client's delayed ACK
would hold every body back ~40 ms. Never a mock: clients speak HTTP to it exactly as
to a production gateway.
"""

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from infra.loopback import LoopbackHttpServer


class SmsGateway(LoopbackHttpServer):
    def __init__(self, port: int | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.status: int | None = None
        self.retry_after: str | None = None
        self.delay = 0.0
        self.connections = 0
        self._lock = threading.Lock()
        super().__init__(port)

    def to(self, number: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["to"] == number]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with gateway._lock:
                    gateway.connections += 1

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                with gateway._lock:
                    self._answer(200, list(gateway.messages))

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    message = json.loads(self.rfile.read(length))
                    to, text = message["to"], message["text"]
                except (ValueError, KeyError, TypeError):
                    return self._answer(400, {"error": "expected JSON {to, text}"})
                time.sleep(gateway.delay)
                status, retry_after = gateway.status, gateway.retry_after  # a test may reset them
                if status is not None:
                    later = {"Retry-After": retry_after} if retry_after else {}
                    return self._answer(status, {"error": "gateway told to fail"}, later)
                kept = {"id": str(uuid.uuid4()), "to": to, "text": text}
                with gateway._lock:
                    gateway.messages.append(kept)
                self._answer(201, {"id": kept["id"]})

        return Handler


def main() -> None:
    """Run the stub in the foreground (``python -m infra.sms_gateway --port N``) until
    SIGTERM or Ctrl-C: a process of its own, so its threads share no interpreter lock."""
    parser = argparse.ArgumentParser(description="an SMS gateway stub for local runs")
    parser.add_argument("--port", type=int, default=8026)
    gateway = SmsGateway(port=parser.parse_args().port).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()


if __name__ == "__main__":
    main()

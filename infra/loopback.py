"""A threaded HTTP server on loopback that a stub (SMS gateway, OTLP receiver) runs in the
background of a test, a bench or ``make run``: the stub supplies its request handler."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from infra.processes import free_port


class LoopbackHttpServer:
    """Serves ``_handler()`` on 127.0.0.1 (``port``, else a free one) once started."""

    def __init__(self, port: int | None = None) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", port or free_port()), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""A loopback TCP proxy a test controls: the way to take a server away from one client.

Put it between a client and a shared server (``TcpProxy(5672).start()``, then point the
client at ``proxy.url(url)``). ``cut()`` drops every open connection and makes new ones
fail at once, as a dead broker would; ``hang()`` drops them too but then accepts new ones
and never answers, as a stuck broker or a black-holed network would; ``partition()`` keeps
open connections but passes no byte and no close either way, and leaves new ones
unanswered, as a network partition does (only a heartbeat or a timeout tells the client);
``restore()`` lets connections through again. The real server is never touched: other
users see nothing.
"""

import contextlib
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

CHUNK = 65536
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "postgresql": 5432, "http": 80}


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", port))
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._mode = "open"
        self._flowing = threading.Event()  # cleared while partitioned
        self._flowing.set()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    @classmethod
    def to(cls, url: str) -> "TcpProxy":
        """A proxy to the server of ``url`` (the first, if ';'-separated), not started yet."""
        parts = urlsplit(url.split(";")[0])
        return cls(parts.port or DEFAULT_PORTS[parts.scheme], parts.hostname or "127.0.0.1")

    def url(self, url: str) -> str:
        """``url`` (the first, if ';'-separated) rewritten to go through the proxy."""
        parts = urlsplit(url.split(";")[0])
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> "TcpProxy":
        self._thread.start()
        return self

    def cut(self) -> None:
        """Close every proxied connection; until ``restore()``, new ones are closed at once."""
        self._switch("cut")

    def hang(self) -> None:
        """Close every proxied connection; until ``restore()``, new ones get no answer."""
        self._switch("hang")

    def partition(self) -> None:
        """Until ``restore()``, open connections stay open but carry nothing (not even a
        close), and new ones get no answer; ``restore()`` then closes them all, as a peer
        that gave up on its side answers once the network is back."""
        self._switch("partition")

    def restore(self) -> None:
        """Let new connections through again (connections held by ``hang()`` are closed)."""
        self._switch("open")

    def _switch(self, mode: str) -> None:
        with self._lock:
            if mode == self._mode:
                return
            self._mode = mode
            if mode == "partition":
                self._flowing.clear()
                return
            sockets, self._open = self._open, set()
        self._flowing.set()
        for sock in sockets:
            _close(sock)

    def stop(self) -> None:
        self._stopped = True
        self.cut()
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)
        _close(self._listener)

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self._mode
                if mode in ("hang", "partition"):
                    self._open.add(client)
            if mode == "cut":
                _close(client)
            if mode != "open":
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(CHUNK):
                self._flowing.wait()  # partitioned: the bytes go nowhere for now
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._flowing.wait()  # nor does a close cross a partition
            with self._lock:
                self._open -= {src, dst}
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()

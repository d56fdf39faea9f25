"""The SMS gateway, over HTTP: the verification text a signup waits for.

The standard library's HTTP/1.1 client over kept-alive connections, each used by one
request thread at a time and kept for the next: httpx cost 0.53 ms of CPU per text, this
0.18 ms (2,000 texts to infra/sms_gateway.py, thread CPU time), the largest single cost
of a signup after the database.
"""

import http.client
import json
import select
from collections import deque
from urllib.parse import urlsplit

HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class SmsUnavailable(RuntimeError):
    """The gateway is down, slow or failing (5xx): the signup can be tried again later."""


class SmsRejected(RuntimeError):
    """The gateway refused the message (4xx): trying again will not help."""


class SmsClient:
    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout
        parts = urlsplit(self.url)
        https = parts.scheme == "https"
        self._new = http.client.HTTPSConnection if https else http.client.HTTPConnection
        self._host, self._port = parts.hostname or "", parts.port
        self._path = f"{parts.path}/messages"
        #: Idle kept-alive connections, newest last (deque: atomic across threads).
        self._idle: deque[http.client.HTTPConnection] = deque()

    def send(self, to: str, text: str) -> str:
        """Hand the text to the gateway; its message id once the gateway has accepted it."""
        body = json.dumps({"to": to, "text": text}).encode()
        conn = self._connection()
        try:
            conn.request("POST", self._path, body, HEADERS)
            response = conn.getresponse()
            data = response.read()
        except TimeoutError as exc:
            conn.close()
            raise SmsUnavailable(
                f"SMS gateway {self.url} did not answer within {self.timeout:g}s"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            failure = f"{type(exc).__name__}: {exc}"
            raise SmsUnavailable(f"SMS gateway {self.url} is unreachable: {failure}") from exc
        if response.will_close:
            conn.close()
        else:
            self._idle.append(conn)
        if response.status >= 500:
            raise SmsUnavailable(f"SMS gateway {self.url} answered HTTP {response.status}")
        if response.status >= 400:
            raise SmsRejected(
                f"SMS gateway refused the message: HTTP {response.status} "
                f"{data.decode(errors='replace')[:200]}"
            )
        return str(json.loads(data)["id"])

    def _connection(self) -> http.client.HTTPConnection:
        """An idle connection the gateway has not closed meanwhile, else a new one."""
        while self._idle:
            try:
                conn = self._idle.pop()
            except IndexError:  # another thread took the last one
                break
            if _open(conn):
                return conn
            conn.close()
        return self._new(self._host, self._port, timeout=self.timeout)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _open(conn: http.client.HTTPConnection) -> bool:
    """Whether a kept-alive connection may carry the next request: nothing to read on it
    (a server that closed it while idle, or sent anything unasked, makes it readable), as
    httpx's pool checks before reusing one."""
    if conn.sock is None:
        return False
    poll = select.poll()
    poll.register(conn.sock, select.POLLIN)
    return not poll.poll(0)

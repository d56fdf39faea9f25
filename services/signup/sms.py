"""The SMS gateway, over HTTP: the verification text a signup waits for.

urllib3's connection pool, kept alive between texts (a pooled connection the gateway
closed while idle is found before reuse and replaced), one per request thread at most:
0.33 ms of CPU per text against httpx's 0.53 ms (2,000 texts to infra/sms_gateway.py,
thread CPU time). No retries here: a signup that could not text its code fails clearly,
and the caller may try again.
"""

import json
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError

HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
#: Connections kept to the gateway: the API's request threads (``API_THREADS``) fit.
KEPT = 16


class SmsUnavailable(RuntimeError):
    """The gateway is down, slow or failing (5xx): the signup can be tried again later."""


class SmsRejected(RuntimeError):
    """The gateway refused the message (4xx): trying again will not help."""


class SmsClient:
    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout
        self._path = f"{urlsplit(self.url).path}/messages"
        self._pool = urllib3.connection_from_url(
            self.url, maxsize=KEPT, timeout=urllib3.Timeout(timeout), retries=False
        )

    def send(self, to: str, text: str) -> str:
        """Hand the text to the gateway; its message id once the gateway has accepted it."""
        body = json.dumps({"to": to, "text": text}).encode()
        try:
            response = self._pool.request("POST", self._path, body=body, headers=HEADERS)
        except NewConnectionError as exc:  # refused: urllib3 files it under timeouts too
            raise SmsUnavailable(f"SMS gateway {self.url} is unreachable: {exc}") from exc
        except TimeoutError as exc:
            raise SmsUnavailable(
                f"SMS gateway {self.url} did not answer within {self.timeout:g}s"
            ) from exc
        except HTTPError as exc:
            failure = f"{type(exc).__name__}: {exc}"
            raise SmsUnavailable(f"SMS gateway {self.url} is unreachable: {failure}") from exc
        if response.status >= 500:
            raise SmsUnavailable(f"SMS gateway {self.url} answered HTTP {response.status}")
        if response.status >= 400:
            raise SmsRejected(
                f"SMS gateway refused the message: HTTP {response.status} "
                f"{response.data.decode(errors='replace')[:200]}"
            )
        return str(json.loads(response.data)["id"])

    def close(self) -> None:
        self._pool.close()

"""The SMS gateway, over HTTP: the verification text a signup waits for."""

import httpx


class SmsUnavailable(RuntimeError):
    """The gateway is down, slow or failing (5xx): the signup can be tried again later."""


class SmsRejected(RuntimeError):
    """The gateway refused the message (4xx): trying again will not help."""


class SmsClient:
    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def send(self, to: str, text: str) -> str:
        """Hand the text to the gateway; its message id once the gateway has accepted it."""
        try:
            response = self._http.post("/messages", json={"to": to, "text": text})
        except httpx.TimeoutException as exc:
            raise SmsUnavailable(
                f"SMS gateway {self.url} did not answer within {self.timeout:g}s"
            ) from exc
        except httpx.TransportError as exc:
            raise SmsUnavailable(f"SMS gateway {self.url} is unreachable: {exc}") from exc
        if response.status_code >= 500:
            raise SmsUnavailable(f"SMS gateway {self.url} answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise SmsRejected(
                f"SMS gateway refused the message: HTTP {response.status_code} "
                f"{response.text[:200]}"
            )
        return str(response.json()["id"])

    def close(self) -> None:
        self._http.close()

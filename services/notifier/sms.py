"""Sending SMS through the HTTP gateway: ``POST {url}/messages`` with ``{"to", "text"}``,
over urllib3's pool of kept-alive connections (one per pool process at a time)."""

import json
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError

from services.notifier.errors import TransientDeliveryError, sms_failure


class SmsClient:
    def __init__(self, base_url: str, timeout: float) -> None:
        self.url = base_url.rstrip("/") + "/messages"
        self.timeout = timeout
        self._path = urlsplit(self.url).path
        self._pool = urllib3.connection_from_url(
            self.url, maxsize=1, timeout=urllib3.Timeout(timeout), retries=False
        )

    def send(self, to: str, text: str, message_id: str) -> None:
        """Send one SMS; ``message_id`` goes out as ``Idempotency-Key`` for gateways that
        deduplicate on it (it closes the crash window between their 201 and our commit)."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": message_id}
        body = json.dumps({"to": to, "text": text}).encode()
        try:
            response = self._pool.request("POST", self._path, body=body, headers=headers)
        except HTTPError as exc:  # refused, reset, timed out: the retry policy's to settle
            raise TransientDeliveryError(f"SMS gateway unreachable: {exc!r}") from exc
        failure = sms_failure(
            response.status,
            response.headers.get("Retry-After"),
            response.data.decode(errors="replace")[:200],
        )
        if failure is not None:
            raise failure

"""Sending SMS through the HTTP gateway: ``POST {url}/messages`` with ``{"to", "text"}``."""

import httpx

from services.notifier.errors import TransientDeliveryError, sms_failure


class SmsClient:
    def __init__(self, base_url: str, timeout: float) -> None:
        self.url = base_url.rstrip("/") + "/messages"
        self.timeout = timeout

    def send(self, to: str, text: str, message_id: str) -> None:
        """Send one SMS; ``message_id`` goes out as ``Idempotency-Key`` for gateways that
        deduplicate on it (it closes the crash window between their 201 and our commit)."""
        try:
            response = httpx.post(
                self.url,
                json={"to": to, "text": text},
                headers={"Idempotency-Key": message_id},
                timeout=self.timeout,
            )
        except httpx.TransportError as exc:
            raise TransientDeliveryError(f"SMS gateway unreachable: {exc!r}") from exc
        failure = sms_failure(
            response.status_code, response.headers.get("Retry-After"), response.text[:200]
        )
        if failure is not None:
            raise failure

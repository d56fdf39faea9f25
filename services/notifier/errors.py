"""How a failed send is classified, which decides between a retry and the DLQ.

Transports (``mailer``, ``sms``) translate what their provider said into one of these, or
let a connection error or timeout through:

- ``PermanentDeliveryError``: retrying cannot help (refused address, 4xx from the SMS
  gateway). Not in any ``autoretry_for``: the task fails at once and is dead-lettered.
- ``TryLater``: the provider asked us to come back (SMTP 4xx, HTTP 429/503). Retried by hand
  with ``task.retry(exc=..., countdown=...)``, honouring ``Retry-After``.
- ``TRANSIENT``: the provider is away or broken (refused or dropped connection, timeout,
  5xx): ``autoretry_for`` with exponential backoff.
"""

import smtplib
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


class PermanentDeliveryError(Exception):
    """The provider refused the message for good: dead-letter it, never retry."""


class TransientDeliveryError(Exception):
    """The provider failed in a way that may pass (5xx, broken connection)."""


class TryLater(Exception):
    """The provider asked for a later attempt; ``retry_after`` seconds when it said how long."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: Retried automatically with backoff (``autoretry_for``).
TRANSIENT = (ConnectionError, TimeoutError, smtplib.SMTPServerDisconnected, TransientDeliveryError)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None if absent
    or unreadable: then the task's ``default_retry_delay`` applies."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def smtp_failure(exc: smtplib.SMTPException) -> Exception:
    """What an SMTP error means for the next attempt: 4xx try later, 5xx permanent."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        answers = exc.recipients.values()
        # Codes and replies, not addresses: this text reaches logs and dead-letter headers.
        said = "; ".join(
            f"{code} {_text(msg).replace(to, '<recipient>')}"
            for to, (code, msg) in exc.recipients.items()
        )
        if answers and all(400 <= code < 500 for code, _ in answers):
            return TryLater(f"recipients deferred: {said}")
        return PermanentDeliveryError(f"recipients refused: {said}")
    code = getattr(exc, "smtp_code", None)
    said = f"SMTP {code} {_text(getattr(exc, 'smtp_error', b''))}" if code else f"SMTP: {exc}"
    if isinstance(code, int) and 400 <= code < 500:
        return TryLater(said)
    return PermanentDeliveryError(said)


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def sms_failure(status: int, retry_after: str | None, detail: str) -> Exception | None:
    """What an SMS gateway answer means: None when sent (201), else the error to raise."""
    if status == 201:
        return None
    if status in (429, 503):
        return TryLater(f"SMS gateway {status}: {detail}", parse_retry_after(retry_after))
    if status >= 500:
        return TransientDeliveryError(f"SMS gateway {status}: {detail}")
    return PermanentDeliveryError(f"SMS gateway {status}: {detail}")

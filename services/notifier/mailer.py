"""Sending e-mail over SMTP, with the provider's answer translated for the retry policy."""

import logging
import smtplib
from email.message import EmailMessage

from services.notifier.errors import smtp_failure

logger = logging.getLogger(__name__)


class SmtpMailer:
    def __init__(self, host: str, port: int, sender: str, timeout: float) -> None:
        self.host, self.port, self.sender, self.timeout = host, port, sender, timeout

    def send(self, to: list[str], subject: str, body: str, message_id: str) -> None:
        """Send one message to ``to``; ``message_id`` is stable across attempts, so a copy sent
        twice in the crash window is recognisable as the same message downstream.

        Any failure closes the connection without QUIT: a server still working on DATA then
        sees the client gone and must not accept the message, so an attempt that we abandon
        (timeout, soft time limit) is not delivered behind our back.
        """
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, ", ".join(to), subject
        message["Message-ID"] = f"<{message_id}@notifier>"
        message.set_content(body)
        try:
            # The constructor connects and reads the greeting: a busy server raises here (421).
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            refused = _submit(smtp, message)
        except smtplib.SMTPException as exc:
            failure = smtp_failure(exc)
            if failure is exc:
                raise
            # Not chained: smtplib's exception names the recipients, and tracebacks are logged.
            raise failure from None
        if refused:
            logger.warning(
                "mail %s not delivered to %d recipient(s) (others got it): %s",
                message_id, len(refused), sorted({code for code, _ in refused.values()}),
            )  # fmt: skip
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()  # the message is already accepted: a failed goodbye changes nothing


def _submit(smtp: smtplib.SMTP, message: EmailMessage) -> dict:
    """``send_message``, closing the connection without QUIT on any failure."""
    try:
        return smtp.send_message(message)
    except BaseException:
        smtp.close()
        raise

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
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            refused = smtp.send_message(message)
        except smtplib.SMTPException as exc:
            smtp.close()
            failure = smtp_failure(exc)
            if failure is exc:
                raise
            raise failure from exc
        except BaseException:
            smtp.close()
            raise
        if refused:
            logger.warning("mail %s not delivered to %s (others got it)", message_id, refused)
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()  # the message is already accepted: a failed goodbye changes nothing

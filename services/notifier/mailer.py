"""Sending e-mail over SMTP, with the provider's answer translated for the retry policy.

One connection per worker process, kept between messages: a new one is a TCP handshake,
the greeting, EHLO and QUIT, four round trips per e-mail that a kept one does not pay. A
kept connection is checked with NOOP before it carries a message; one the server has
dropped meanwhile (idle timeout, restart) is replaced, as nothing was sent on it. Once a
message is under way, a broken connection is a transient error, as it was with a
connection per message.
"""

import logging
import os
import smtplib
from email.message import EmailMessage

from services.notifier.errors import smtp_failure

logger = logging.getLogger(__name__)


class SmtpMailer:
    def __init__(self, host: str, port: int, sender: str, timeout: float) -> None:
        self.host, self.port, self.sender, self.timeout = host, port, sender, timeout
        self._smtp: smtplib.SMTP | None = None
        self._pid = 0

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
            refused = self._submit(message)
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

    def _submit(self, message: EmailMessage) -> dict:
        """``send_message`` on the kept connection, closing it without QUIT on any failure."""
        smtp = self._connection()
        try:
            return smtp.send_message(message)
        except BaseException:
            self._smtp = None
            smtp.close()
            raise

    def _connection(self) -> smtplib.SMTP:
        """The kept connection if the server still answers NOOP, else a new one (whose
        constructor connects and reads the greeting: a busy server raises here, 421).
        A connection is kept again only once it answered: one interrupted mid-command
        (a soft time limit) would read the wrong replies from then on."""
        kept, self._smtp = self._smtp, None
        if kept is not None:
            try:
                if self._pid == os.getpid() and kept.noop()[0] == 250:
                    self._smtp = kept
                    return kept
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                if self._smtp is None:
                    kept.close()
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        self._smtp, self._pid = smtp, os.getpid()
        return smtp

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
from collections.abc import Iterable
from email.message import EmailMessage

from services.notifier.errors import smtp_failure

logger = logging.getLogger(__name__)


#: Longest header value or body line the plain composition takes (RFC 5322 allows 998
#: characters a line; a header this long would need folding, which ``EmailMessage`` does).
PLAIN_LIMIT = 900


def compose(
    sender: str, to: list[str], subject: str, body: str, message_id: str
) -> EmailMessage | bytes:
    """The message to send. ASCII headers on one line and an ASCII body with short lines
    (every notification the services send) are written out directly: ``EmailMessage``
    parses each header through the header registry and costs ~1 ms of CPU a message, as
    much as the rest of the notifier's work on it. Anything else (encoded words, folding,
    8-bit text, a line break in a header, which it refuses) is left to ``EmailMessage``."""
    headers = {"From": sender, "To": ", ".join(to), "Subject": subject, "Message-ID": message_id}
    lines = body.splitlines()
    if _plain(headers.values()) and body.isascii() and _plain(lines):
        head = [f"{name}: {value}" for name, value in headers.items()]
        head += ['Content-Type: text/plain; charset="utf-8"',
                 "Content-Transfer-Encoding: 7bit", "MIME-Version: 1.0"]  # fmt: skip
        return "\r\n".join([*head, "", *lines, ""]).encode("ascii")
    message = EmailMessage()
    for name, value in headers.items():
        message[name] = value
    message.set_content(body)
    return message


def _plain(values: Iterable[str]) -> bool:
    return all(v.isascii() and v.isprintable() and len(v) <= PLAIN_LIMIT for v in values)


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
        message = compose(self.sender, to, subject, body, f"<{message_id}@notifier>")
        try:
            refused = self._submit(message, to)
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

    def _submit(self, message: EmailMessage | bytes, to: list[str]) -> dict:
        """The message on the kept connection, closing it without QUIT on any failure."""
        smtp = self._connection()
        try:
            if isinstance(message, bytes):
                return smtp.sendmail(self.sender, to, message)
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

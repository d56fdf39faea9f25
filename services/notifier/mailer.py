"""Sending e-mail over SMTP, with the provider's answer translated for the retry policy.

One connection per worker process, kept between messages: a new one is a TCP handshake,
the greeting, EHLO and QUIT, four round trips per e-mail that a kept one does not pay. A
kept connection is not checked before use (a NOOP would be a fifth round trip): one the
server dropped meanwhile (idle timeout, restart) is found by the message's MAIL, which
then gets no answer or the 421 the server sent as it closed, and the message goes out on
a new connection, as nothing was sent on the dead one. Once MAIL is accepted, a broken
connection is a transient error, as it was with a connection per message.
"""

import logging
import os
import smtplib
from collections.abc import Iterable, Sequence
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
        self._smtp: _Session | None = None
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
        """The message on the kept connection, or on a new one if the kept one was dead
        before it began; closing the connection without QUIT on any failure."""
        smtp = self._connection()
        try:
            try:
                return _sendmail(smtp, self.sender, to, message)
            except _Dead:
                self._smtp = None
                smtp.close()
                smtp = self._connection()
                return _sendmail(smtp, self.sender, to, message)
        except BaseException:
            self._smtp = None
            smtp.close()
            raise

    def _connection(self) -> "_Session":
        """The kept connection, else a new one (whose constructor connects and reads the
        greeting: a busy server raises here, 421). A connection is kept only while its
        commands are answered: one interrupted mid-command (a soft time limit) would read
        the wrong replies from then on. Never one a parent process opened before a fork."""
        if self._smtp is not None and self._pid == os.getpid():
            return self._smtp
        smtp = _Session(self.host, self.port, timeout=self.timeout)
        self._smtp, self._pid = smtp, os.getpid()
        return smtp


class _Dead(Exception):
    """A kept connection the server had dropped: its MAIL got no answer, or 421."""


class _Session(smtplib.SMTP):
    """smtplib's session, telling a kept connection found dead at MAIL (nothing sent on
    it: the message may go out on another) apart from a failure of the message itself."""

    #: Whether a message went out on it: then a MAIL without an answer means it died kept.
    carried = False

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        try:
            reply = super().mail(sender, options)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            if self.carried:
                raise _Dead from exc
            raise
        if reply[0] == 421 and self.carried:
            raise _Dead
        return reply


def _sendmail(smtp: _Session, sender: str, to: list[str], message: EmailMessage | bytes) -> dict:
    refused = (
        smtp.sendmail(sender, to, message)
        if isinstance(message, bytes)
        else smtp.send_message(message)
    )
    smtp.carried = True
    return refused

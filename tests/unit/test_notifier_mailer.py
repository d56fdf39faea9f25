"""The notifier's SMTP client against a real SMTP server on loopback (the project's sink)."""

import email
import email.policy
from email.message import EmailMessage

import pytest

from infra.smtp_sink import SmtpSink
from services.notifier.errors import TryLater
from services.notifier.mailer import SmtpMailer, compose


@pytest.fixture
def sink():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def mailer_for(port: int) -> SmtpMailer:
    return SmtpMailer("127.0.0.1", port, "noreply@example.com", timeout=5)


def send(mailer: SmtpMailer, to: str) -> None:
    mailer.send([to], "Hi", "Hello.", f"id-{to}")


def test_emails_sent_by_one_process_share_one_smtp_connection(sink):
    mailer = mailer_for(sink.port)
    for n in range(3):
        send(mailer, f"u{n}@example.com")

    assert [m["to"] for m in sink.messages] == [[f"u{n}@example.com"] for n in range(3)]
    assert len({m["peer"] for m in sink.messages}) == 1


def test_a_kept_connection_carries_the_next_email_without_a_noop_first(sink):
    """A NOOP per message is a round trip the server answers 250 nearly always; a dead kept
    connection is found by the message's MAIL instead (the tests below)."""
    mailer = mailer_for(sink.port)
    for n in range(3):
        send(mailer, f"u{n}@example.com")

    assert len(sink.messages) == 3 and sink.noops == 0


def test_after_a_failed_send_the_next_email_opens_a_new_connection(sink):
    mailer = mailer_for(sink.port)
    send(mailer, "before@example.com")
    sink.refused.add("gone@example.com")
    with pytest.raises(Exception, match="550"):
        send(mailer, "gone@example.com")
    send(mailer, "after@example.com")

    before, after = sink.messages
    assert after["to"] == ["after@example.com"] and after["peer"] != before["peer"]


def restarted(sink: SmtpSink, busy: int = 0) -> SmtpSink:
    """The server goes away, and with it the connection a mailer keeps; another comes up
    on the same port."""
    sink.stop()
    again = SmtpSink(port=sink.port).start()
    again.busy = busy  # after start: starting connects once to check the server
    return again


def test_a_connection_the_server_dropped_is_replaced_and_the_email_sent_once():
    first = SmtpSink().start()
    mailer = mailer_for(first.port)
    send(mailer, "first@example.com")
    again = restarted(first)
    try:
        send(mailer, "second@example.com")
    finally:
        again.stop()

    assert [m["to"] for m in again.messages] == [["second@example.com"]]


def test_a_kept_connection_to_a_server_gone_for_good_fails_as_the_new_connection_does():
    """The dead kept connection is not the error: the new connection's is (transient)."""
    sink = SmtpSink().start()
    mailer = mailer_for(sink.port)
    send(mailer, "first@example.com")
    sink.stop()
    with pytest.raises(ConnectionRefusedError):
        send(mailer, "second@example.com")


def test_a_server_busy_at_the_greeting_of_the_new_connection_means_try_later():
    first = SmtpSink().start()
    mailer = mailer_for(first.port)
    send(mailer, "first@example.com")
    again = restarted(first, busy=1)
    try:
        with pytest.raises(TryLater, match="421"):
            send(mailer, "second@example.com")
        send(mailer, "second@example.com")
    finally:
        again.stop()

    assert [m["to"] for m in again.messages] == [["second@example.com"]]


def test_a_busy_server_turns_away_a_kept_connection_too_and_the_email_is_tried_later(sink):
    """A loaded MTA answers 421 on the sessions it already has, not only at new greetings:
    the kept connection's NOOP meets it, the new connection's greeting too (chaos's
    "SMTP busy" fault would otherwise meet no new connection while connections are kept)."""
    mailer = mailer_for(sink.port)
    send(mailer, "first@example.com")
    sink.busy = 2  # the kept session's next command, then the new connection's greeting
    with pytest.raises(TryLater, match="421"):
        send(mailer, "second@example.com")
    assert sink.busy == 0
    send(mailer, "second@example.com")

    first, second = sink.messages
    assert second["to"] == ["second@example.com"] and second["peer"] != first["peer"]


def as_received(message) -> tuple[dict[str, str], str]:
    """Headers and text as a mail client reads them."""
    raw = message if isinstance(message, bytes) else message.as_bytes(policy=email.policy.SMTP)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return {k: str(v) for k, v in parsed.items()}, parsed.get_content()


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("Welcome!", "Hello Bench, welcome aboard."),
        ("Report daily for 2026-11-24", "Report r1 (daily, 2026-11-24)\n\nuser.signed_up: 12\n"),
        ("Dots", ".a line starting with a dot\n..and two\n"),
        ("Bienvenue, José", "Bonjour José."),  # not ASCII: EmailMessage's encoded words
        ("Long", "x" * 2000),  # a line too long for 7bit: EmailMessage's transfer encoding
    ],
)
def test_a_message_reads_the_same_whichever_way_it_was_composed(subject, body):
    fast = compose("noreply@example.com", ["a@example.com", "b@example.com"], subject, body,
                   "<m1@notifier>")  # fmt: skip
    slow = EmailMessage()
    slow["From"], slow["To"], slow["Subject"] = "noreply@example.com", "a@example.com, " \
        "b@example.com", subject  # fmt: skip
    slow["Message-ID"] = "<m1@notifier>"
    slow.set_content(body)

    assert as_received(fast) == as_received(slow)


def test_a_line_break_in_a_subject_is_refused_and_nothing_is_sent(sink):
    mailer = mailer_for(sink.port)
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        mailer.send(["a@example.com"], "Hi\r\nBcc: victim@example.com", "Hello.", "id-1")
    send(mailer, "after@example.com")

    assert [m["to"] for m in sink.messages] == [["after@example.com"]]
    assert "Bcc" not in sink.messages[0]["data"]


def test_the_server_gets_the_subject_and_the_text(sink):
    mailer_for(sink.port).send(["a@example.com"], "Welcome!", "Hello.\n.dot", "id-1")

    (message,) = sink.messages
    received = email.message_from_string(message["data"], policy=email.policy.default)
    assert received["Subject"] == "Welcome!" and received["Message-ID"] == "<id-1@notifier>"
    assert received.get_content().replace("\r\n", "\n") == "Hello.\n.dot\n"

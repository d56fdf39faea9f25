"""The notifier's SMTP client against a real SMTP server on loopback (the project's sink)."""

import pytest

from infra.smtp_sink import SmtpSink
from services.notifier.errors import TryLater
from services.notifier.mailer import SmtpMailer


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

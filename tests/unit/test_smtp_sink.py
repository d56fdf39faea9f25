"""The SMTP sink `make run` and `make demo` read mail from: what arrives is printed once."""

import io
import smtplib
from email.message import EmailMessage

import pytest

from infra.smtp_sink import SmtpSink, print_new


@pytest.fixture
def sink():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def mail(sink: SmtpSink, to: str) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", to, f"Hi {to}"
    message.set_content("hello")
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as smtp:
        smtp.send_message(message)


class ArrivalWhilePrinting(io.StringIO):
    """Output whose first write makes another message arrive at the sink, exactly while the
    print loop is between reading the messages and counting them."""

    def __init__(self, sink: SmtpSink) -> None:
        super().__init__()
        self.sink, self.arrived = sink, False

    def write(self, text: str) -> int:
        if not self.arrived:
            self.arrived = True
            mail(self.sink, "late@example.com")
        return super().write(text)


def test_a_message_arriving_while_the_sink_prints_is_printed_on_the_next_pass(sink):
    mail(sink, "first@example.com")
    out = ArrivalWhilePrinting(sink)
    seen = print_new(sink, 0, out)
    seen = print_new(sink, seen, out)

    lines = out.getvalue().splitlines()
    assert lines == [
        "mail to first@example.com: Subject: Hi first@example.com",
        "mail to late@example.com: Subject: Hi late@example.com",
    ]
    assert seen == 2

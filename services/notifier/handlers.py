"""What the notifier does with events and commands; plain functions, dependencies named.

Each handler names its delivery (what, to whom, under which idempotency key) and hands
the sending to ``attempts.run``, which is the same for all of them.
"""

from typing import Any

from contracts import ReportGenerated, SendEmail, SendSms, UserSignedUp
from services.notifier.attempts import Attempts
from services.notifier.deliveries import Delivery
from services.notifier.errors import TRANSIENT
from services.notifier.mailer import SmtpMailer
from services.notifier.sms import SmsClient
from shared import RetryPolicy

#: Growing delays without jitter: one e-mail per signup, and the delays stay predictable.
WELCOME_EMAIL_RETRY = RetryPolicy(
    autoretry_for=TRANSIENT,
    max_retries=5,
    default_retry_delay=60,
    retry_backoff=2,
    retry_backoff_max=600,
    retry_jitter=False,
)


def send_welcome_email(
    event: UserSignedUp, task: Any, attempts: Attempts, mailer: SmtpMailer
) -> str:
    """The user's welcome e-mail, once per signup however often the event arrives."""
    to = [str(event.payload.email)]
    delivery = Delivery.for_event(event, "welcome_email", "email", to, task)
    body = f"Hello {event.payload.name}, welcome aboard."
    return attempts.run(
        task, delivery, lambda: mailer.send(to, "Welcome!", body, delivery.message_id)
    )


#: The admins can wait: fewer, longer, spread-out retries.
ADMIN_NOTICE_RETRY = RetryPolicy(
    autoretry_for=TRANSIENT,
    max_retries=3,
    default_retry_delay=300,
    retry_backoff=30,
    retry_jitter=True,
)


def notify_admins_of_signup(
    event: UserSignedUp, task: Any, attempts: Attempts, mailer: SmtpMailer, admins: list[str]
) -> str:
    """Tell the admins someone signed up; a retry policy of its own, apart from the welcome."""
    if not admins:
        return "no-admins"
    delivery = Delivery.for_event(event, "admin_signup_notice", "email", admins, task)
    user = event.payload
    subject = f"New signup: {user.email}"
    body = f"{user.name} <{user.email}> (user {user.user_id}) signed up at {event.occurred_at}."
    return attempts.run(
        task, delivery, lambda: mailer.send(admins, subject, body, delivery.message_id)
    )


#: A report keeps its value for hours: many retries, up to an hour apart.
REPORT_SUMMARY_RETRY = RetryPolicy(
    autoretry_for=TRANSIENT,
    max_retries=8,
    default_retry_delay=300,
    retry_backoff=60,
    retry_backoff_max=3600,
    retry_jitter=True,
)


def send_report_summary(
    event: ReportGenerated, task: Any, attempts: Attempts, mailer: SmtpMailer, admins: list[str]
) -> str:
    """Mail a generated report's summary to the admins."""
    if not admins:
        return "no-admins"
    delivery = Delivery.for_event(event, "report_summary", "email", admins, task)
    report = event.payload
    subject = f"Report {report.kind} for {report.day}"
    lines = [f"{name}: {count}" for name, count in sorted(report.summary.items())]
    body = "\n".join([f"Report {report.report_id} ({report.kind}, {report.day})", "", *lines])
    return attempts.run(
        task, delivery, lambda: mailer.send(admins, subject, body, delivery.message_id)
    )


SEND_EMAIL_RETRY = RetryPolicy(
    autoretry_for=TRANSIENT,
    max_retries=5,
    default_retry_delay=60,
    retry_backoff=5,
    retry_backoff_max=900,
    retry_jitter=True,
)


def send_email(command: SendEmail, task: Any, attempts: Attempts, mailer: SmtpMailer) -> str:
    """An e-mail another service asked for. The attachment is a reference (services share
    no storage), so it reaches the recipient as a line of the body."""
    to = [str(command.to)]
    delivery = Delivery.for_command("email", "email", to, task)
    body = command.body
    if command.attachment is not None:
        body += f"\n\nAttachment: {command.attachment}"
    return attempts.run(
        task, delivery, lambda: mailer.send(to, command.subject, body, delivery.message_id)
    )


SEND_SMS_RETRY = RetryPolicy(
    autoretry_for=TRANSIENT,
    max_retries=5,
    default_retry_delay=30,
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
)


def send_sms(command: SendSms, task: Any, attempts: Attempts, sms: SmsClient) -> str:
    """An SMS another service asked for, through the HTTP gateway."""
    delivery = Delivery.for_command("sms", "sms", [command.to], task)
    return attempts.run(
        task, delivery, lambda: sms.send(command.to, command.text, delivery.message_id)
    )

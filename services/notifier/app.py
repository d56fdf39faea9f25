"""The notifier service: e-mail and SMS on behalf of the others.

Every send is its own task with its own retry policy (named beside its handler in
``handlers.py``), in the source document's terms: ``autoretry_for`` transient errors with
``retry_backoff``/``retry_jitter`` up to ``max_retries``; ``default_retry_delay`` for a
provider's "try later" without a Retry-After. Every task has soft/hard time limits, and
``on_failure`` publishes ``notification.failed`` exactly when the message goes to
``notifier.dlq``.
"""

import logging

from contracts import ReportGenerated, SendEmail, SendSms, UserSignedUp
from services.notifier import handlers
from services.notifier.attempts import Attempts
from services.notifier.config import get_settings
from services.notifier.deliveries import Deliveries
from services.notifier.mailer import SmtpMailer
from services.notifier.sms import SmsClient
from shared import Service

settings = get_settings()
logger = logging.getLogger(__name__)


def service_attempts() -> Attempts:
    return Attempts(Deliveries(service.db), service.publish)


service = Service(
    "notifier",
    settings=settings,
    dependencies={
        "mailer": lambda: SmtpMailer(
            settings.smtp_host, settings.smtp_port, settings.mail_from, settings.smtp_timeout
        ),
        "sms": lambda: SmsClient(settings.sms_gateway_url, settings.sms_timeout),
        "attempts": service_attempts,
        "admins": lambda: settings.admins,
    },
)


def report_final_failure(task, exc, task_id, args, kwargs, einfo) -> None:
    """Celery's ``on_failure``: runs for a final failure only (not for a retry), including
    the hard time limit. The dead letter is the record of last resort if this fails."""
    try:
        service_attempts().failed(task_id, exc)
    except Exception:
        logger.exception("%s[%s]: could not publish notification.failed", task.name, task_id)


SENDING = {
    "soft_time_limit": settings.send_soft_time_limit,
    "time_limit": settings.send_time_limit,
    "on_failure": report_final_failure,
}

service.handles(UserSignedUp, retry=handlers.WELCOME_EMAIL_RETRY, **SENDING)(
    handlers.send_welcome_email
)
service.handles(UserSignedUp, retry=handlers.ADMIN_NOTICE_RETRY, **SENDING)(
    handlers.notify_admins_of_signup
)
service.handles(ReportGenerated, retry=handlers.REPORT_SUMMARY_RETRY, **SENDING)(
    handlers.send_report_summary
)
service.command(SendEmail, retry=handlers.SEND_EMAIL_RETRY, **SENDING)(handlers.send_email)
service.command(SendSms, retry=handlers.SEND_SMS_RETRY, **SENDING)(handlers.send_sms)

app = service.celery

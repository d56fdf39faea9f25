"""How the notifier classifies a provider's answer: retry with backoff, try later, or DLQ."""

import smtplib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from services.notifier.errors import (
    TRANSIENT,
    PermanentDeliveryError,
    TransientDeliveryError,
    TryLater,
    parse_retry_after,
    sms_failure,
    smtp_failure,
)


def test_the_sms_gateway_201_is_sent_and_429_or_503_mean_try_later_with_retry_after():
    assert sms_failure(201, None, "") is None
    for status in (429, 503):
        later = sms_failure(status, "7", "busy")
        assert isinstance(later, TryLater) and later.retry_after == 7.0
    assert sms_failure(503, None, "busy").retry_after is None


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_sms_gateway_4xx_answers_are_permanent(status):
    assert isinstance(sms_failure(status, None, "no"), PermanentDeliveryError)


@pytest.mark.parametrize("status", [500, 502, 504])
def test_sms_gateway_5xx_answers_are_transient_and_autoretried(status):
    failure = sms_failure(status, None, "oops")
    assert isinstance(failure, TransientDeliveryError) and isinstance(failure, TRANSIENT)


def test_an_unexpected_success_code_is_not_retried_since_the_sms_may_have_gone_out():
    assert isinstance(sms_failure(200, None, ""), PermanentDeliveryError)


def test_retry_after_reads_seconds_or_an_http_date_and_ignores_garbage():
    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_a_refused_recipient_is_permanent_and_a_deferred_one_is_try_later():
    refused = smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"5.1.1 no such user")})
    failure = smtp_failure(refused)
    assert isinstance(failure, PermanentDeliveryError)
    assert "550 5.1.1 no such user" in str(failure)
    assert "a@example.com" not in str(failure)
    deferred = smtplib.SMTPRecipientsRefused({"a@example.com": (451, b"4.3.0 try again")})
    assert isinstance(smtp_failure(deferred), TryLater)


def test_smtp_4xx_replies_are_try_later_5xx_permanent_and_a_dropped_connection_transient():
    assert isinstance(smtp_failure(smtplib.SMTPDataError(421, b"closing")), TryLater)
    assert isinstance(smtp_failure(smtplib.SMTPDataError(554, b"rejected")), PermanentDeliveryError)
    dropped = smtplib.SMTPServerDisconnected("gone")
    assert smtp_failure(dropped) is dropped and isinstance(dropped, TRANSIENT)
    assert isinstance(ConnectionRefusedError(), TRANSIENT) and isinstance(TimeoutError(), TRANSIENT)

"""Notifier settings refuse combinations that would not do what they say."""

import pytest
from pydantic import ValidationError

from services.notifier.config import NotifierSettings


def test_a_soft_time_limit_at_or_above_the_hard_one_is_refused():
    with pytest.raises(ValidationError, match="SEND_SOFT_TIME_LIMIT must be below"):
        NotifierSettings(send_soft_time_limit=60, send_time_limit=60)
    assert NotifierSettings(send_soft_time_limit=5, send_time_limit=10).send_time_limit == 10


def test_admins_are_read_from_a_comma_separated_list_and_may_be_none():
    assert NotifierSettings(admin_emails=" a@example.com, b@example.com ,").admins == [
        "a@example.com",
        "b@example.com",
    ]
    assert NotifierSettings(admin_emails="").admins == []

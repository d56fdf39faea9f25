"""Credentials in URLs: decoded where they are used, redacted wherever they are shown."""

import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from shared.core.settings import redact
from shared.ops.management import Management, ManagementError


def test_a_password_with_reserved_characters_works_percent_encoded(stack):
    admin = Management(stack.management_url)
    user, password = f"secret-{uuid.uuid4().hex[:6]}", "p@ss:w/rd%"
    admin.request("PUT", f"/users/{user}", json={"password": password, "tags": "monitoring"})
    try:
        encoded = password.replace("%", "%25").replace("@", "%40").replace(":", "%3A")
        encoded = encoded.replace("/", "%2F")
        server = urlsplit(stack.management_url.split(";")[0])
        url = urlunsplit(
            server._replace(netloc=f"{user}:{encoded}@{server.netloc.rpartition('@')[2]}")
        )
        assert Management(url).request("GET", "/whoami")["name"] == user
    finally:
        admin.request("DELETE", f"/users/{user}")


def test_errors_name_the_server_but_never_the_password():
    with pytest.raises(ManagementError) as failure:
        Management("http://ops:s3cr3t-pw@127.0.0.1:9;http://ops:other-pw@127.0.0.1:9").request(
            "GET", "/overview"
        )
    assert "127.0.0.1:9" in str(failure.value)
    assert "s3cr3t-pw" not in str(failure.value) and "other-pw" not in str(failure.value)


def test_redact_hides_every_password_of_a_failover_list():
    urls = "amqp://svc:pw1@a:5672/v;amqp://svc:pw2@b:5672/v;amqp://c:5672/v"
    assert redact(urls) == "amqp://svc:**@a:5672/v;amqp://svc:**@b:5672/v;amqp://c:5672/v"
    assert redact("postgresql+psycopg://u:p%40w@h/db") == "postgresql+psycopg://u:**@h/db"

"""Worker logs carry ids, not personal data: no address, name, phone or message text at
INFO, nor in the errors of a delivery refused or a message that fails its contract."""

import json
import uuid

from tests.support import JSON, envelope, framed, headers, publish_raw, send_command, wait_for


def test_worker_logs_name_no_address_phone_or_text(clean_queues):
    stack = clean_queues
    mark = uuid.uuid4().hex[:10]
    email, name = f"pii-{mark}@example.com", f"Name{mark}"
    phone = "+82" + str(int(mark, 16))[:9]
    text = f"secret text {mark}"
    refused = f"refused-{mark}@example.com"
    stack.smtp.refused.add(refused)
    notifier = stack.worker("notifier", ADMIN_EMAILS=f"admin-{mark}@example.com")
    reports = stack.worker("reports")
    try:  # both stopped, whichever start fails
        notifier.start()
        reports.start()
        event = envelope(email)
        event["payload"] |= {"name": name, "phone": phone}
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        invalid = envelope(f"not-an-address-{mark}")
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(invalid),
                    application_headers=headers(invalid), **JSON)  # fmt: skip
        send_command(stack, "notifier.send_email", to=email, subject=f"Subject {mark}", body=text)
        send_command(stack, "notifier.send_email", to=refused, subject="x", body=text)
        wait_for(lambda: len(stack.smtp.to(email)) == 2, timeout=60)
        dead: list = []
        wait_for(lambda: dead.extend(stack.dead_letters("notifier")) or len(dead) == 2, 60)
    finally:
        stack.smtp.refused.discard(refused)
        notifier.stop()
        reports.stop()
    logs = notifier.output() + reports.output()
    assert "dead-lettered" in logs and " received" in logs  # the logs are there
    for secret in (email, name, phone, text, refused, f"not-an-address-{mark}", f"admin-{mark}"):
        lines = [line for line in logs.splitlines() if secret in line]
        assert lines == [], json.dumps(lines[:3])

"""What a report says: the summary numbers, and a Markdown rendering people can read."""

from typing import Any

SENT, FAILED, SIGNUP = "notification.sent", "notification.failed", "user.signed_up"


def summarize(totals: dict[str, int], breakdown: dict[str, int]) -> dict[str, int]:
    """The headline numbers published with ``report.generated``."""
    summary = {
        "signups": totals.get(SIGNUP, 0),
        "notifications_sent": totals.get(SENT, 0),
        "notifications_failed": totals.get(FAILED, 0),
    }
    for key, count in sorted(breakdown.items()):
        event_type, _, channel = key.partition("/")
        if channel and event_type in (SENT, FAILED):
            summary[f"{event_type.split('.')[1]}_{channel}"] = count
    return summary


def markdown(document: dict[str, Any]) -> str:
    """The report as Markdown: headline table, counts per shard, failed notifications."""
    lines = [
        f"# {document['kind'].capitalize()} report for {document['day']}",
        "",
        f"Period: {document['start']} to {document['end']} ({document['timezone']})",
        "",
        "| measure | count |",
        "|---|---:|",
        *(f"| {name} | {count} |" for name, count in document["summary"].items()),
        "",
        "## Per period",
        "",
        "| from | signups | sent | failed |",
        "|---|---:|---:|---:|",
    ]
    for shard in document["shards"]:
        counts = shard["counts"]
        lines.append(
            f"| {shard['start']} | {counts.get(SIGNUP, 0)} | {counts.get(SENT, 0)}"
            f" | {counts.get(FAILED, 0)} |"
        )
    failures = document["failures"]
    lines += ["", f"## Failed notifications ({len(failures)} shown)", ""]
    lines += [
        f"- {f['channel']} {f['kind']} to {f['recipient']}: {f['error'] or 'no reason given'}"
        for f in failures
    ] or ["None."]
    return "\n".join(lines) + "\n"

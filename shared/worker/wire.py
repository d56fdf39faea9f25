"""What a task message must look like before a worker turns it into a request.

Celery builds its ``Request`` from a message before any task code runs, and trusts the
shape: a body that is JSON but not ``[args, kwargs, embed]``, a missing ``id`` header, a
``timelimit`` that is not a pair, and the worker process exits ("Unrecoverable error"),
to die again on the redelivery. Publishers in other languages make exactly these
mistakes. ``check_headers`` and ``check_body`` state the protocol-2 contract the worker
relies on, ``check_message`` applies them to a message before the worker's handler sees
it, and each raises ``MalformedMessage`` (an ``InvalidTaskError``, which the consumer
dead-letters) with a reason an operator can filter by and a message a publisher can act on.
"""

import math
from datetime import UTC, datetime
from numbers import Real
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.utils.time import maybe_iso8601, maybe_make_aware

#: Headers the worker reads as strings (absent or null is fine, except ``id`` and ``task``).
TEXT_HEADERS = ("root_id", "parent_id", "group", "shadow", "argsrepr", "kwargsrepr", "origin")
EMBED_LISTS = ("callbacks", "errbacks", "chain")
#: Every key Celery's embed may have: any other overwrites the request (``fast_trace_task``:
#: ``request.update({...}, **embed)``), from whoever sent it.
EMBED_KEYS = (*EMBED_LISTS, "chord")
#: Headers the worker reads as non-negative integers (absent or null is fine).
COUNT_HEADERS = ("retries", "group_index", "replaced_task_nesting")
EXPECTED = "a JSON array [args (array), kwargs (object), embed (object or null)]"


class MalformedMessage(InvalidTaskError):
    """A message no task can be run from; ``reason`` is its ``x-dead-letter-reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _headers_error(detail: str) -> MalformedMessage:
    return MalformedMessage("malformed-headers", f"malformed headers: {detail}")


def check_headers(
    headers: Any, max_eta: float | None = None, max_time_limit: float | None = None
) -> None:
    """The headers Celery's worker reads, with the types and ranges it assumes.

    ``max_eta``: how far ahead an ``eta`` may lie, in seconds. The worker holds an ETA
    message unacked in memory until it is due; past the broker's ``consumer_timeout`` the
    broker closes the channel, and the message comes back to be held again, round after
    round. Delays belong to native delayed delivery (a countdown), which holds them in
    the broker. ``max_time_limit``: the longest time limit a message may ask for (a longer
    one outlives the delivery, as above).
    """
    if not isinstance(headers, dict):
        raise _headers_error(f"expected a table, got {type(headers).__name__}")
    for name in ("id", "task"):
        value = headers.get(name)
        if not isinstance(value, str) or not value:
            raise _headers_error(f"{name!r} must be a non-empty string, got {value!r}"[:300])
    for name in TEXT_HEADERS:
        if not isinstance(headers.get(name), str | None):
            raise _headers_error(f"{name!r} must be a string, got {headers[name]!r}"[:300])
    for name in COUNT_HEADERS:
        value = headers.get(name)
        if value is not None and (type(value) is not int or value < 0):
            raise _headers_error(f"{name!r} must be a non-negative integer, got {value!r}"[:300])
    _check_stamps(headers)
    if not isinstance(headers.get("ignore_result"), bool | None):
        raise _headers_error(f"'ignore_result' must be a boolean, got {headers['ignore_result']!r}")
    _check_times(headers, max_eta)
    _check_timelimit(headers.get("timelimit"), max_time_limit)


def _check_times(headers: dict[str, Any], max_eta: float | None) -> None:
    """``eta`` and ``expires``: ISO 8601 times, an ``eta`` at most ``max_eta`` s ahead."""
    for name in ("eta", "expires"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            # celery-types: maybe_iso8601 may give None; only for a None value, skipped above
            when = maybe_make_aware(maybe_iso8601(value))  # type: ignore[arg-type]
        except (AttributeError, TypeError, ValueError, OverflowError):
            detail = f"{name!r} must be an ISO 8601 time, got {value!r}"
            raise _headers_error(detail[:300]) from None
        ahead = (when - datetime.now(UTC)).total_seconds()
        if name == "eta" and max_eta is not None and ahead > max_eta:
            raise MalformedMessage(
                "eta-too-far",
                f"'eta' is {ahead:.0f} s ahead, more than {max_eta:.0f} s: a worker would hold"
                " it past the broker's consumer_timeout; publish with a countdown instead",
            )


def _check_timelimit(timelimit: Any, ceiling: float | None) -> None:
    """``[hard, soft]`` seconds, each null or in (0, ``ceiling``], soft below hard: a
    limit of -1 s had every pool process that took the message SIGKILLed."""
    if timelimit is None:
        return
    if not (
        isinstance(timelimit, list | tuple)
        and len(timelimit) == 2
        and all(v is None or (isinstance(v, Real) and not isinstance(v, bool)) for v in timelimit)
    ):
        raise _headers_error(f"'timelimit' must be [hard, soft] seconds, got {timelimit!r}"[:300])
    if any(v is not None and not 0 < v <= (ceiling or math.inf) for v in timelimit):
        raise _headers_error(
            f"'timelimit' seconds must be above 0 and at most {ceiling}, got {timelimit!r}"[:300]
        )
    hard, soft = timelimit
    if hard is not None and soft is not None and soft >= hard:
        raise _headers_error(
            f"'timelimit' [hard, soft]: soft must be below hard, got {timelimit!r}"
        )


def _check_stamps(headers: dict[str, Any]) -> None:
    """``stamps`` a table, ``stamped_headers`` a list of names (Celery iterates both)."""
    stamps, stamped = headers.get("stamps"), headers.get("stamped_headers")
    if not isinstance(stamps, dict | None):
        raise _headers_error(f"'stamps' must be a table, got {type(stamps).__name__}")
    if stamped is not None and not (
        isinstance(stamped, list | tuple) and all(isinstance(s, str) for s in stamped)
    ):
        raise _headers_error(f"'stamped_headers' must be a list of names, got {stamped!r}"[:300])


def check_protocol(message: Any) -> None:
    """A task message has a ``task`` header (protocol 2). Without one Celery reads the body
    as protocol 1, whose task, id and options none of the platform's checks see."""
    headers = message.headers
    if isinstance(headers, dict) and "task" in headers:
        return
    try:
        named = isinstance(message.payload, dict) and "task" in message.payload
    except Exception:  # undecodable: it names no task either
        named = False
    if named:
        raise MalformedMessage(
            "protocol-1", "a task named in the body (Celery protocol 1) is not run: use"
            " protocol 2, the 'task' and 'id' headers and an [args, kwargs, embed] body",
        )  # fmt: skip
    raise MalformedMessage("no-task-header", "message has no 'task' header")


def check_message(
    message: Any, max_eta: float | None = None, max_time_limit: float | None = None
) -> None:
    """A protocol-2 task message: headers, content type, then the decoded body.

    Decoding raises kombu's ``DecodeError`` / ``ContentDisallowed`` as Celery's would; the
    decoded body is cached on the message, so the worker does not decode it twice.
    """
    check_headers(message.headers, max_eta, max_time_limit)
    if not message.content_type:
        # kombu would hand the raw bytes on as if they were the decoded body.
        raise MalformedMessage(
            "content-type-not-allowed", "no content_type: publish with application/json"
        )
    if not message.body:
        raise MalformedMessage("undecodable-body", f"empty body: expected {EXPECTED}")
    check_body(message.payload)


def check_body(payload: Any) -> None:
    """The decoded body: protocol 2's ``[args, kwargs, embed]``."""
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        got = (
            f"{type(payload).__name__} of length {len(payload)}"
            if isinstance(payload, list | tuple | dict | str)
            else type(payload).__name__
        )
        raise MalformedMessage("malformed-body", f"body must be {EXPECTED}, got {got}")
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple):
        got = type(args).__name__
        raise MalformedMessage("malformed-body", f"args must be an array, got {got}")
    if not isinstance(kwargs, dict):
        raise MalformedMessage(
            "malformed-body", f"kwargs must be an object, got {type(kwargs).__name__}"
        )
    if embed is None:
        return
    if not isinstance(embed, dict):
        raise MalformedMessage(
            "malformed-body", f"embed must be an object or null, got {type(embed).__name__}"
        )
    unknown = sorted(str(k) for k in embed if k not in EMBED_KEYS)
    if unknown:
        raise MalformedMessage(
            "malformed-body", f"embed keys other than {', '.join(EMBED_KEYS)}: {unknown}"[:300]
        )
    for name in EMBED_LISTS:
        value = embed.get(name)
        if value is not None and not (
            isinstance(value, list | tuple) and all(isinstance(s, dict) for s in value)
        ):
            raise MalformedMessage("malformed-body", f"embed {name!r} must be an array of objects")
    if not isinstance(embed.get("chord"), dict | None):
        raise MalformedMessage("malformed-body", "embed 'chord' must be an object or null")

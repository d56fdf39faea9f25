"""The signup HTTP API (``uvicorn services.signup.api:app``).

A signup waits for what the user must see happen (the user saved, the verification SMS
sent) and for nothing else: ``user.signed_up`` is committed to the outbox with the user
and published by a background thread after the response, or by the outbox relay.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import sqlalchemy as sa
from celery import states
from celery.result import AsyncResult
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse

from services.signup.app import build_service
from services.signup.config import SignupSettings, get_settings
from services.signup.model import users
from services.signup.schemas import SignupRequest, TaskStatus, User
from services.signup.signup import DuplicateEmail, create_user
from services.signup.sms import SmsClient, SmsRejected, SmsUnavailable
from shared.outbox import AfterCommit, Outbox, Relay
from shared.service import Service


@dataclass
class Runtime:
    """What the routes use, built once per app."""

    settings: SignupSettings
    service: Service
    outbox: Outbox
    after_commit: AfterCommit
    sms: SmsClient


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


Rt = Annotated[Runtime, Depends(runtime)]
router = APIRouter()


@router.post("/users/signup", status_code=status.HTTP_201_CREATED, response_model=User)
def signup(body: SignupRequest, rt: Rt, response: Response) -> dict[str, Any]:
    """Save the user and send the verification SMS; ``user.signed_up`` follows the commit."""
    try:
        with rt.service.db.transaction() as session:
            event = create_user(
                session, rt.outbox, email=body.email, name=body.name, phone=body.phone, sms=rt.sms
            )
    except DuplicateEmail as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except SmsUnavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"{exc}; nothing was saved, try again later"
        ) from exc
    except SmsRejected as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"{exc}; nothing was saved") from exc
    rt.after_commit.notify(event.id)
    user_id = event.payload.user_id
    response.headers["Location"] = f"/users/{user_id}"
    return _user(rt, user_id)


@router.get("/users/{user_id}", response_model=User)
def get_user(user_id: UUID, rt: Rt) -> dict[str, Any]:
    return _user(rt, user_id)


def _user(rt: Runtime, user_id: UUID) -> dict[str, Any]:
    with rt.service.db.transaction() as session:
        row = session.execute(sa.select(users).where(users.c.id == user_id)).mappings().first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id}")
    return dict(row)


@router.get("/tasks/{task_id}", response_model=TaskStatus)
def task_status(task_id: str, rt: Rt) -> TaskStatus:
    """A signup task's state from the result backend; PENDING also means "unknown id"."""
    result = AsyncResult(task_id, app=rt.service.celery)
    state = result.state
    answer = TaskStatus(task_id=task_id, status=state, ready=state in states.READY_STATES)
    if state == states.SUCCESS:
        answer.result = result.result
    elif isinstance(result.result, BaseException):
        answer.result = {"type": type(result.result).__name__, "message": str(result.result)}
        answer.traceback = result.traceback
    return answer


@router.get("/healthz")
def healthz(rt: Rt) -> JSONResponse:
    """200 when the database and the broker answer; 503 naming whichever does not."""
    checks = {"database": _check(rt.outbox.unsent, "outbox_unsent")}
    checks["broker"] = _check(lambda: _ping_broker(rt), None)
    healthy = all(c["ok"] for c in checks.values())
    down = [name for name, c in checks.items() if not c["ok"]]
    body = {"status": "ok" if healthy else "unavailable: " + ", ".join(down), "checks": checks}
    return JSONResponse(body, status_code=200 if healthy else 503)


def _check(probe: Any, key: str | None) -> dict[str, Any]:
    try:
        value = probe()
    except Exception as exc:  # a health check reports every failure, whatever its type
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, **({key: value} if key else {})}


def _ping_broker(rt: Runtime) -> None:
    celery = rt.service.celery
    with celery.connection_for_write(connect_timeout=rt.settings.broker_timeout) as conn:
        conn.ensure_connection(max_retries=len(rt.settings.amqp_urls) - 1)


def create_app(settings: SignupSettings | None = None) -> FastAPI:
    """The API with its own service, outbox, after-commit publisher and SMS client."""
    settings = settings or get_settings()
    service = build_service(settings)
    outbox = Outbox(service)
    relay = Relay(outbox, connect_timeout=settings.broker_timeout)
    rt = Runtime(
        settings=settings,
        service=service,
        outbox=outbox,
        after_commit=AfterCommit(relay),
        sms=SmsClient(settings.sms_gateway_url, settings.sms_timeout),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.after_commit.start()
        yield
        rt.after_commit.stop()
        rt.sms.close()
        service.db.dispose()

    app = FastAPI(title="signup", lifespan=lifespan)
    app.state.runtime = rt
    app.include_router(router)
    return app


app = create_app()

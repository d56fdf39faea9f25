"""The signup HTTP API (``uvicorn services.signup.api:app``).

A signup waits for what the user must see happen (the user saved, the verification SMS
sent) and for nothing else: ``user.signed_up`` is committed to the outbox with the user
and published by a background thread after the response, or by the outbox relay. One
transaction per signup, whose INSERT returns the row the answer shows (no second read),
and kept-alive connections to the SMS gateway (sms.py, urllib3).
Reading a user or a task needs the operators' bearer token (``API_TOKEN``): one shows
personal data, the other tracebacks. Errors are problem documents (problems.py).
"""

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import sqlalchemy as sa
from anyio.to_thread import current_default_thread_limiter
from celery import states
from celery.result import AsyncResult
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.signup import problems
from services.signup.app import build_service
from services.signup.config import SignupSettings, get_settings
from services.signup.model import users
from services.signup.schemas import SignupRequest, TaskStatus, User
from services.signup.signup import DuplicateEmail, create_user
from services.signup.sms import SmsClient, SmsRejected, SmsUnavailable
from shared import (
    AfterCommit,
    Outbox,
    Relay,
    Service,
    instrument_app,
    use_json_logs_outside_workers,
)


@dataclass
class Runtime:
    """What the routes use, built once per app."""

    settings: SignupSettings
    service: Service
    outbox: Outbox
    after_commit: AfterCommit
    sms: SmsClient
    api_token: str = ""  # set at start-up, which refuses to start without one
    probe: asyncio.Future | None = None  # the readiness query in flight, at most one


# The dependencies are coroutines: FastAPI runs a plain function dependency in the thread
# pool, one more hand-off to a thread (and back) per request for an attribute read.
async def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


Rt = Annotated[Runtime, Depends(runtime)]
bearer = HTTPBearer(auto_error=False, description="The operators' token (API_TOKEN).")


async def operator(
    rt: Rt, given: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """Only a caller holding ``API_TOKEN`` passes; the comparison takes constant time."""
    token = given.credentials.encode() if given else b""
    if not (rt.api_token and secrets.compare_digest(token, rt.api_token.encode())):
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})


ANY, DB = (413, 500), (503,)
#: Requests served at once (sync routes run in threads): fewer than the database pool's
#: connections (shared.core.db.POOL_SIZE), so a request never waits on, or opens and drops,
#: a connection; more wait for a thread, on the event loop.
API_THREADS = 16
router = APIRouter()
operators = APIRouter(dependencies=[Depends(operator)], responses=problems.responses(401))


@router.post(
    "/users/signup",
    status_code=status.HTTP_201_CREATED,
    response_model=User,
    responses=problems.responses(400, 409, 422, 502, *DB, *ANY),
)
def signup(body: SignupRequest, rt: Rt, response: Response) -> dict[str, Any]:
    """Save the user and send the verification SMS; ``user.signed_up`` follows the commit."""
    try:
        with rt.service.db.transaction() as session:
            user, event = create_user(
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
    response.headers["Location"] = f"/users/{user['id']}"
    return user


@operators.get(
    "/users/{user_id:uuid}", response_model=User, responses=problems.responses(404, 422, *DB, *ANY)
)
def get_user(user_id: UUID, rt: Rt) -> dict[str, Any]:
    return _user(rt, user_id)


def _user(rt: Runtime, user_id: UUID) -> dict[str, Any]:
    with rt.service.db.transaction() as session:
        row = session.execute(sa.select(users).where(users.c.id == user_id)).mappings().first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id}")
    return dict(row)


@operators.get(
    "/tasks/{task_id}", response_model=TaskStatus, responses=problems.responses(422, *DB, *ANY)
)
def task_status(task_id: Annotated[str, Path(max_length=155)], rt: Rt) -> TaskStatus:
    """A signup task's state from the result backend; PENDING also means "unknown id"."""
    result: AsyncResult[Any] = AsyncResult(task_id, app=rt.service.celery)
    state = result.state
    answer = TaskStatus(task_id=task_id, status=state, ready=state in states.READY_STATES)
    if state == states.SUCCESS:
        answer.result = result.result
    elif isinstance(result.result, BaseException):
        answer.result = {"type": type(result.result).__name__, "message": str(result.result)}
        # celery-types: a TracebackType; the backend stores (and gives) the formatted text
        answer.traceback = result.traceback  # type: ignore[assignment]
    return answer


@router.get("/livez", responses=problems.responses(*ANY))
def livez() -> dict[str, str]:
    """The process answers: nothing else is asked, so a dependency's outage never restarts it."""
    return {"status": "ok"}


@router.get("/readyz", responses=problems.responses(*DB, *ANY))
async def readyz(rt: Rt) -> JSONResponse:
    """Ready when the database answers within ``readiness_timeout``. RabbitMQ is not asked:
    while it is away signups wait in the outbox, so leaving the load balancer would only
    refuse them. ``outbox_unsent`` is what shows a broker outage."""
    try:
        unsent = await _probe(rt, rt.outbox.unsent)
    except Exception as exc:  # readiness reports every failure, whatever its type
        detail = f"the database did not answer ({type(exc).__name__})"
        return problems.problem(503, detail, {"Retry-After": str(rt.settings.retry_after)})
    database = {"ok": True, "outbox_unsent": unsent}
    return JSONResponse({"status": "ok", "checks": {"database": database}})


async def _probe(rt: Runtime, query: Callable[[], Any]) -> Any:
    """One query in flight at most: probes of a hung database wait on it, not pile up threads."""
    if rt.probe is None or rt.probe.done():
        rt.probe = asyncio.ensure_future(run_in_threadpool(query))
    async with asyncio.timeout(rt.settings.readiness_timeout):
        return await asyncio.shield(rt.probe)


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
        rt.api_token = settings.required_api_token()
        current_default_thread_limiter().total_tokens = API_THREADS
        rt.after_commit.start()
        yield
        rt.after_commit.stop()
        rt.sms.close()
        service.db.dispose()

    app = FastAPI(title="signup", lifespan=lifespan)
    app.state.runtime = rt
    app.include_router(router)
    app.include_router(operators)
    problems.install(app, settings.retry_after, settings.max_body_bytes)
    problems.with_problem_schema(app)
    instrument_app(app)
    if settings.log_format == "json":
        use_json_logs_outside_workers(service.name)
    return app


app = create_app()

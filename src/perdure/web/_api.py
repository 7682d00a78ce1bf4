"""The JSON endpoints: list, get, steps, events, messages, actions, start by name, cancel,
resume, fork, restart, send, bulk cancel and resume, breakers.

Each endpoint is a plain ``def``: FastAPI runs it in its thread pool, where the app's
synchronous methods (each a short store transaction) may block. Every action taken here
is logged in the operator actions log as ``http`` (or ``http:<name>`` with the header
``X-Perdure-Actor: <name>``: whoever holds the token may name themselves, and the prefix
keeps that apart from the users of the CLI).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .._app import App
from .._display import utc
from .._errors import (
    AmbiguousWorkflowError,
    ErasureRefusedError,
    InvalidValueError,
    PerdureError,
    StoreUnavailableError,
    UnknownWorkflowError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
    WorkflowNotResumableError,
)
from .._inspect import MAX_PAGE, decode_value, jsonable, summary
from .._regions import database_urls, store_holding
from .._validation import check_key
from ._metrics import metrics_router
from ._pages import add_pages
from ._security import authorized, check_token, is_loopback, scrub, secrets_of
from ._streams import stream_routes

log = logging.getLogger("perdure.web")

#: HTTP status of each error a caller can cause; anything else is a 500 without details.
STATUS_OF: tuple[tuple[type[PerdureError], int], ...] = (
    (WorkflowNotFoundError, 404),
    (UnknownWorkflowError, 404),
    (WorkflowNotResumableError, 409),
    (WorkflowFinishedError, 409),
    (ErasureRefusedError, 409),
    (AmbiguousWorkflowError, 409),
    (InvalidValueError, 400),
    (StoreUnavailableError, 503),
    (PerdureError, 400),
)


class StartBody(BaseModel):
    """Start the registered workflow ``name`` with these arguments."""

    name: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    workflow_id: str | None = None
    timeout: float | None = None
    #: The data subjects whose data it holds (``app.options(subjects=...)``).
    subjects: list[str] | None = None
    #: The region whose database holds it (an app with regions: ``app.options(region=...)``).
    region: str | None = None


class ForkBody(BaseModel):
    """Fork from a step (its first ``from_step`` recorded steps are kept)."""

    from_step: int
    workflow_id: str | None = None


class RestartBody(BaseModel):
    """Restart under a new ID (default: a new UUID)."""

    workflow_id: str | None = None


class SendBody(BaseModel):
    """A message for the workflow's ``perdure.recv(topic)``."""

    message: Any = None
    topic: str | None = None
    idempotency_key: str | None = None


class OpenBody(BaseModel):
    """How long a breaker opened by hand stays open before a probe attempt may run."""

    seconds: float = Field(gt=0)


class FilterBody(BaseModel):
    """Which workflows a bulk action takes (creation times in seconds since the epoch)."""

    status: str | None = None
    name: str | None = None
    created_after: float | None = None
    created_before: float | None = None


def _accepted(request: Request, workflow_id: str, **extra: Any) -> JSONResponse:
    # 202: the change is durable; the workflow runs on a worker. Poll the Location (under
    # the path the API is mounted at, if it is).
    root = request.scope.get("root_path", "")
    location = f"{root}/api/workflows/{quote(workflow_id, safe='')}"
    body = {"workflow_id": workflow_id, "location": location, **extra}
    return JSONResponse(body, status_code=202, headers={"Location": location})


def create_app(app: App, token: str | None = None) -> FastAPI:
    """A FastAPI application serving ``app``'s workflows over JSON, and its dashboard at
    ``/`` (see the package).

    With ``token``, every endpoint under ``/api`` needs ``Authorization: Bearer <token>``,
    and the dashboard a login with it.
    The interactive docs pages are off (they would load scripts from the internet); the
    schema is at ``/openapi.json``.
    """
    token = check_token(token)
    secrets = [secret for url in database_urls(app) for secret in secrets_of(url)]

    def guard(request: Request, authorization: str | None = Header(default=None)) -> None:
        if token is not None and not authorized(authorization, token):
            raise _Unauthorized()
        if token is None and not is_loopback(request.url.hostname or ""):
            # Without a token only this machine may call: a Host that is not a loopback
            # name is a request relayed from elsewhere, or a web page's DNS rebinding.
            raise _Refused(
                403,
                "without a token this API answers only requests to "
                "127.0.0.1 or localhost: give create_app a token",
            )
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _is_json(request):
            # A web page can POST a form or text anywhere without asking (no CORS
            # preflight); it cannot send JSON: so a change needs a JSON request.
            raise _Refused(415, "send changes as JSON (Content-Type: application/json)")

    def actor(x_perdure_actor: str | None = Header(default=None)) -> str:
        if x_perdure_actor is None:
            return "http"
        return "http:" + check_key("X-Perdure-Actor", x_perdure_actor)

    api = FastAPI(
        title="perdure",
        summary="See and repair durable workflows.",
        docs_url=None,
        redoc_url=None,
    )

    @api.exception_handler(_Unauthorized)
    def unauthorized(request: Request, exc: _Unauthorized) -> JSONResponse:
        return JSONResponse(
            {"error": "a valid bearer token is required (Authorization: Bearer <token>)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @api.exception_handler(_Refused)
    def refused(request: Request, exc: _Refused) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @api.exception_handler(PerdureError)
    def perdure_error(request: Request, exc: PerdureError) -> JSONResponse:
        status = next(code for kind, code in STATUS_OF if isinstance(exc, kind))
        body = {"error": scrub(str(exc), secrets), "type": type(exc).__name__}
        return JSONResponse(body, status_code=status)

    @api.exception_handler(Exception)
    def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged here with its traceback; the caller learns only that it happened.
        log.error("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error (see the server's log)"}, status_code=500)

    router = APIRouter(prefix="/api", dependencies=[Depends(guard)])

    # Routes with a suffix come before the bare /workflows/{id}: an ID may hold "/".

    @router.get("/workflows")
    def list_workflows(
        status: str | None = None,
        name: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = Query(default=50, ge=1, le=MAX_PAGE),
        cursor: str | None = None,
        queue: str | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """A page of workflows, newest first; ``next_cursor`` fetches the next page;
        ``queue`` and ``key`` (with ``queue``) keep a queue's workflows, of one key."""
        page = app.list_page(
            status=status,
            name=name,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
            queue=queue,
            key=key,
        )
        return {
            "workflows": [summary(item) for item in page.workflows],
            "next_cursor": page.next_cursor,
        }

    @router.post("/workflows", status_code=202)
    def start(request: Request, body: StartBody) -> JSONResponse:
        """Start a registered workflow by name; poll the Location for its status."""
        starter = app.options(
            workflow_id=body.workflow_id,
            timeout=body.timeout,
            subjects=body.subjects,
            region=body.region,
        )
        handle = starter.start(body.name, *body.args, **body.kwargs)
        return _accepted(request, handle.workflow_id)

    router.include_router(stream_routes(app))  # before /workflows/{id}: an ID may hold "/"

    @router.get("/workflows/{workflow_id:path}/steps")
    def steps(workflow_id: str) -> dict[str, Any]:
        """Every recorded step: status, attempts, start and end, output or error."""
        return {"steps": jsonable(app.inspect(workflow_id).as_dict()["steps"])}

    @router.get("/workflows/{workflow_id:path}/events")
    def events(workflow_id: str) -> dict[str, Any]:
        """The events the workflow set, by key."""
        return {"events": app.inspect(workflow_id).events}

    @router.get("/workflows/{workflow_id:path}/messages")
    def messages(workflow_id: str, pending: bool = False) -> dict[str, Any]:
        """Messages sent to the workflow, in order (``pending=true``: not received yet)."""
        store = store_holding(app, workflow_id)  # the region's, with regions
        found = store.list_messages(workflow_id, pending_only=pending, limit=MAX_PAGE)
        return {
            "messages": [
                {
                    "seq": m.seq,
                    "topic": m.topic,
                    "payload": decode_value(m.payload),
                    "idempotency_key": m.idempotency_key,
                    "sent_at": jsonable(utc(m.created_at)),
                    "received_at": jsonable(utc(m.consumed_at)),
                }
                for m in found
            ]
        }

    @router.get("/workflows/{workflow_id:path}/actions")
    def actions(workflow_id: str) -> dict[str, Any]:
        """The operator actions taken on the workflow, oldest first."""
        return {"actions": app.inspect(workflow_id).actions}

    @router.post("/workflows/{workflow_id:path}/cancel")
    def cancel(workflow_id: str, who: str = Depends(actor)) -> dict[str, Any]:
        """Ask the workflow and its descendants to cancel."""
        return {"workflow_id": workflow_id, "asked": app.cancel(workflow_id, actor=who)}

    @router.post("/workflows/{workflow_id:path}/resume", status_code=202)
    def resume(request: Request, workflow_id: str, who: str = Depends(actor)) -> JSONResponse:
        """Resume a FAILED or CANCELLED workflow from its recorded steps (409 otherwise)."""
        app.resume(workflow_id, actor=who)
        return _accepted(request, workflow_id)

    @router.post("/workflows/{workflow_id:path}/fork", status_code=202)
    def fork(
        request: Request, workflow_id: str, body: ForkBody, who: str = Depends(actor)
    ) -> JSONResponse:
        """A new workflow with the first ``from_step`` recorded steps of this one."""
        handle = app.fork(workflow_id, body.from_step, body.workflow_id, actor=who)
        return _accepted(request, handle.workflow_id, forked_from=workflow_id)

    @router.post("/workflows/{workflow_id:path}/restart", status_code=202)
    def restart(
        request: Request,
        workflow_id: str,
        body: RestartBody | None = None,
        who: str = Depends(actor),
    ) -> JSONResponse:
        """The same workflow with the same inputs, anew, under a new ID."""
        new_id = body.workflow_id if body is not None else None
        handle = app.restart(workflow_id, new_id, actor=who)
        return _accepted(request, handle.workflow_id, forked_from=workflow_id)

    @router.post("/workflows/{workflow_id:path}/send", status_code=202)
    def send(
        request: Request, workflow_id: str, body: SendBody, who: str = Depends(actor)
    ) -> JSONResponse:
        """Send a message to the workflow's ``perdure.recv(topic)``."""
        app.send(workflow_id, body.message, body.topic, body.idempotency_key, actor=who)
        return _accepted(request, workflow_id)

    @router.get("/workflows/{workflow_id:path}")
    def get(workflow_id: str) -> dict[str, Any]:
        """Everything known about the workflow (see ``perdure.App.inspect``)."""
        return dict(jsonable(app.inspect(workflow_id).as_dict()))

    @router.post("/bulk/cancel")
    def cancel_many(body: FilterBody, who: str = Depends(actor)) -> dict[str, Any]:
        """Ask every active workflow matching the filters to cancel."""
        asked = app.cancel_many(**body.model_dump(), actor=who)
        return {"asked": asked}

    @router.post("/bulk/resume")
    def resume_many(body: FilterBody, who: str = Depends(actor)) -> dict[str, Any]:
        """Resume every FAILED or CANCELLED workflow matching the filters."""
        return {"resumed": app.resume_many(**body.model_dump(), actor=who)}

    @router.get("/breakers")
    def breakers() -> dict[str, Any]:
        """Every circuit breaker: state, failures, cool-down, probe, parked workflows."""
        return {"breakers": [jsonable(asdict(item)) for item in app.breakers()]}

    @router.post("/breakers/{name:path}/open")
    def open_breaker(name: str, body: OpenBody, who: str = Depends(actor)) -> dict[str, Any]:
        """Open a breaker by hand for ``seconds`` (steps behind it park)."""
        app.open_breaker(name, body.seconds, actor=who)
        return jsonable(asdict(app.breaker(name)))  # type: ignore[no-any-return]

    @router.post("/breakers/{name:path}/close")
    def close_breaker(name: str, who: str = Depends(actor)) -> dict[str, Any]:
        """Close a breaker by hand; every workflow parked on it wakes."""
        woken = app.close_breaker(name, actor=who)
        return {**jsonable(asdict(app.breaker(name))), "woken": woken}

    @router.get("/audit")
    def audit(
        workflow_id: str | None = None,
        action: str | None = None,
        after: int = Query(default=0, ge=0),
        limit: int = Query(default=100, ge=1, le=MAX_PAGE),
        schedule: str | None = None,
        queue: str | None = None,
    ) -> dict[str, Any]:
        """Operator actions, oldest first (``after``: the last ``seq`` seen); of one
        workflow, schedule or queue."""
        entries = app.audit_log(
            workflow_id=workflow_id,
            schedule=schedule,
            queue=queue,
            action=action,
            after=after,
            limit=limit,
        )
        return {"actions": [jsonable(asdict(entry)) for entry in entries]}

    @router.post("/subjects/{subject:path}/erase")
    def erase(subject: str, who: str = Depends(actor)) -> dict[str, Any]:
        """Erase every stored payload of the data subject's workflows (409 while one is
        active)."""
        return {"subject": subject, "erased": app.erase(subject, actor=who)}

    api.include_router(router)
    add_pages(api, app, token, secrets)
    api.include_router(metrics_router(app), dependencies=[Depends(guard)])
    return api


class _Unauthorized(Exception):
    """A request without the token (answered 401 by its handler)."""


class _Refused(Exception):
    """A request refused before it reaches an endpoint (its status and why)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind == "application/json"

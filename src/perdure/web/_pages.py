"""The dashboard: server-rendered pages at ``/`` of the same ASGI app as the API.

Jinja2 templates (``templates/``, autoescaped: every value is text, never markup) and
htmx (``static/htmx.min.js``, shipped in the package: nothing is loaded from the
internet, and there is no build step). The workflow list and an active workflow's page
poll a fragment of themselves every ``REFRESH_SECONDS``; actions are plain forms that
htmx posts after a confirmation, each checked by ``_session`` (the session cookie, its
CSRF token and the request's origin) and logged as the operator action of ``dashboard``.

Pages are plain ``def`` (the app's methods block on short store transactions, so they
run in the thread pool); actions are ``async def`` only to read the form, and call the
app in the thread pool too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles

from .._app import App
from .._errors import PerdureError, WorkflowNotFoundError
from .._handle import HoldStatus
from .._inspect import MAX_PAGE
from .._model import WorkflowState
from .._regions import store_holding
from ._ops_pages import add_ops_pages
from ._security import is_loopback, scrub
from ._session import (
    CSRF_FIELD,
    CSRF_HEADER,
    PAGE_HEADERS,
    Session,
    Sessions,
    clear_cookie,
    same_origin,
    set_cookie,
)
from ._views import (
    STATUSES,
    default_fork,
    fork_choices,
    hold_lines,
    parse_time,
    pretty,
    status_class,
    timeline,
    when,
)

HERE = Path(__file__).resolve().parent
#: How often the list and an active workflow's page refresh themselves.
REFRESH_SECONDS = 2
#: Who the operator actions log names for the dashboard's actions.
ACTOR = "dashboard"
#: Workflows per page of the list.
PAGE_SIZE = 50


class _Refusal(Exception):
    """A page request refused before it is served (the response that says so)."""

    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, pretty=pretty, status_class=status_class, pathid=_pathid)
    return env


def _pathid(value: str) -> str:
    return quote(value, safe="")


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def add_pages(api: FastAPI, app: App, token: str | None, secrets: list[str]) -> None:
    """Serve the dashboard of ``app`` at ``/`` of ``api`` (see the module)."""
    sessions = Sessions(token)
    env = _environment()
    api.mount("/static", StaticFiles(directory=HERE / "static"), name="perdure-static")

    @api.exception_handler(_Refusal)
    def refused(request: Request, exc: _Refusal) -> Response:
        return exc.response

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", ""))

    def page(
        request: Request, name: str, session: Session | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = env.get_template(name).render(
            root=root(request),
            csrf=session.csrf if session else "",
            csrf_field=CSRF_FIELD,
            needs_login=sessions.needs_login,
            refresh=REFRESH_SECONDS,
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
        if session is not None and session.new_cookie is not None:
            set_cookie(request, response, session.new_cookie)
        return response

    def refusal(request: Request, status: int, message: str) -> _Refusal:
        return _Refusal(page(request, "refused.html", None, status, message=message, error=True))

    def check_host(request: Request) -> None:
        if token is None and not is_loopback(request.url.hostname or ""):
            raise refusal(
                request,
                403,
                "Without a token the dashboard answers only requests to 127.0.0.1 or "
                "localhost: give create_app a token.",
            )

    def to_login(request: Request) -> _Refusal:
        target = f"{root(request)}/login"
        if _is_htmx(request):
            return _Refusal(Response(status_code=401, headers={"HX-Redirect": target}))
        return _Refusal(RedirectResponse(target, status_code=303))

    def visitor(request: Request) -> Session:
        """The session of a page's visitor: logged in, or (no token) new if need be."""
        check_host(request)
        session = sessions.of(request)
        if session is not None:
            return session
        if sessions.needs_login:
            raise to_login(request)
        return sessions.mint()

    async def changer(request: Request) -> dict[str, str]:
        """The form of a change, once its session, origin and CSRF token are checked."""
        check_host(request)
        session = sessions.of(request)
        if session is None:
            if sessions.needs_login:
                raise to_login(request)
            raise refusal(request, 403, "No session: load the page again, then retry.")
        if not same_origin(request):
            raise refusal(request, 403, "Refused: this change comes from another site.")
        form = _form(await request.body())
        given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if not sessions.csrf_ok(session, given):
            raise refusal(
                request, 403, "Refused: the form's CSRF token is missing or stale; reload."
            )
        return form

    def notice(request: Request, message: str, *, error: bool) -> HTMLResponse:
        """A message for the page's notice (htmx puts it there), or a page of its own."""
        if not _is_htmx(request):
            status = 400 if error else 200
            return page(request, "refused.html", None, status, message=message, error=error)
        html = env.get_template("_notice.html").render(message=message, error=error)
        headers = {"HX-Retarget": "#notice", "HX-Reswap": "innerHTML", **PAGE_HEADERS}
        return HTMLResponse(html, headers=headers)

    async def act(request: Request, action: Callable[[dict[str, str]], str]) -> Response:
        """Run a checked change: go to the page it returns (a path starting with ``/``),
        or show what it says, or its error."""
        form = await changer(request)
        try:
            result = await run_in_threadpool(action, form)
        except (PerdureError, ValueError) as exc:
            return notice(request, scrub(str(exc), secrets), error=True)
        if not result.startswith("/"):
            return notice(request, result, error=False)
        url = root(request) + result
        if _is_htmx(request):
            return Response(status_code=200, headers={"HX-Redirect": url})
        return RedirectResponse(url, status_code=303)

    pages = APIRouter(include_in_schema=False)

    # -- logging in --------------------------------------------------------------------

    @pages.get("/login")
    def login_form(request: Request) -> Response:
        check_host(request)
        if not sessions.needs_login:
            return RedirectResponse(f"{root(request)}/", status_code=303)
        return page(request, "login.html", None, failed=False)

    @pages.post("/login")
    async def login(request: Request) -> Response:
        check_host(request)
        if not same_origin(request):
            raise refusal(request, 403, "Refused: this login comes from another site.")
        form = _form(await request.body())
        if not sessions.check_token(form.get("token", "")):
            return page(request, "login.html", None, 401, failed=True)
        response = RedirectResponse(f"{root(request)}/", status_code=303)
        set_cookie(request, response, str(sessions.mint().new_cookie))
        return response

    @pages.post("/logout")
    async def logout(request: Request) -> Response:
        await changer(request)
        response = RedirectResponse(f"{root(request)}/login", status_code=303)
        clear_cookie(request, response)
        return response

    # -- the workflow list -------------------------------------------------------------

    def listing(request: Request) -> dict[str, Any]:
        params = request.query_params
        filters = {
            "status": params.get("status") or None,
            "name": params.get("name") or None,
            "created_after": params.get("created_after") or None,
            "created_before": params.get("created_before") or None,
            "queue": params.get("queue") or None,
            "key": params.get("key") or None,
        }
        shown = {k: v for k, v in filters.items() if v}
        context: dict[str, Any] = {
            "filters": {k: v or "" for k, v in filters.items()},
            "statuses": STATUSES,
            "query": urlencode({**shown, **_only(params, "cursor")}),
            "first_page": urlencode(shown),
            "workflows": [],
            "next_page": None,
            "error": None,
        }
        try:
            result = app.list_page(
                status=filters["status"],
                name=filters["name"],
                created_after=parse_time(filters["created_after"]),
                created_before=parse_time(filters["created_before"]),
                limit=PAGE_SIZE,
                cursor=params.get("cursor") or None,
                queue=filters["queue"],
                key=filters["key"],
            )
        except (PerdureError, ValueError) as exc:
            context["error"] = scrub(str(exc), secrets)
            return context
        context["workflows"] = result.workflows
        if result.next_cursor is not None:
            context["next_page"] = urlencode({**shown, "cursor": result.next_cursor})
        return context

    @pages.get("/")
    def workflows(request: Request) -> Response:
        session = visitor(request)
        return page(request, "list.html", session, **listing(request))

    @pages.get("/_rows")
    def rows(request: Request) -> Response:
        session = visitor(request)
        return page(request, "_rows.html", session, **listing(request))

    @pages.get("/open")
    def open_id(request: Request, id: str = "") -> Response:
        visitor(request)
        if not id.strip():
            return RedirectResponse(f"{root(request)}/", status_code=303)
        return RedirectResponse(f"{root(request)}/workflows/{_pathid(id.strip())}", 303)

    @pages.post("/bulk/resume")
    async def resume_many(request: Request) -> Response:
        def run(form: dict[str, str]) -> str:
            resumed = app.resume_many(**_filters(form), actor=ACTOR)
            return f"{len(resumed)} workflow(s) resumed."

        return await act(request, run)

    @pages.post("/bulk/cancel")
    async def cancel_many(request: Request) -> Response:
        def run(form: dict[str, str]) -> str:
            filters = _filters(form)
            if not any(filters[key] for key in ("name", "created_after", "created_before")):
                raise ValueError("cancelling in bulk needs a name or a creation time filter")
            return f"{len(app.cancel_many(**filters, actor=ACTOR))} workflow(s) asked to cancel."

        return await act(request, run)

    # -- one workflow ------------------------------------------------------------------

    def workflow_context(workflow_id: str) -> dict[str, Any]:
        detail = app.inspect(workflow_id)
        store = store_holding(app, detail.workflow_id)  # the region's, with regions
        record = store.get_workflow(detail.workflow_id)
        hold = None if record is None else HoldStatus.from_record(record)
        children = store.list_children(detail.workflow_id, limit=MAX_PAGE)
        now = datetime.fromtimestamp(app.clock.time(), timezone.utc)
        return {
            "w": detail,
            "active": WorkflowState(detail.status).active,
            "resumable": detail.status in (WorkflowState.FAILED, WorkflowState.CANCELLED),
            "timeline": timeline(detail, now, children),
            "hold": hold_lines(hold),
            "forks": fork_choices(detail),
            "fork_default": default_fork(detail),
        }

    def missing(request: Request, session: Session, workflow_id: str) -> Response:
        message = f"No workflow has the ID {workflow_id!r}."
        return page(request, "refused.html", session, 404, message=message, error=True)

    @pages.get("/_workflow")
    def workflow_body(request: Request, id: str, shown: str = "") -> Response:
        session = visitor(request)
        try:
            context = workflow_context(id)
        except WorkflowNotFoundError:
            return missing(request, session, id)
        if shown and context["w"].status != shown:
            # Its status changed: the whole page again, with the actions that fit now.
            return Response(status_code=200, headers={"HX-Refresh": "true"})
        return page(request, "_workflow_body.html", session, **context)

    @pages.post("/workflows/{workflow_id:path}/cancel")
    async def cancel(request: Request, workflow_id: str) -> Response:
        def run(form: dict[str, str]) -> str:
            app.cancel(workflow_id, actor=ACTOR)
            return f"/workflows/{_pathid(workflow_id)}"

        return await act(request, run)

    @pages.post("/workflows/{workflow_id:path}/resume")
    async def resume(request: Request, workflow_id: str) -> Response:
        def run(form: dict[str, str]) -> str:
            app.resume(workflow_id, actor=ACTOR)
            return f"/workflows/{_pathid(workflow_id)}"

        return await act(request, run)

    @pages.post("/workflows/{workflow_id:path}/fork")
    async def fork(request: Request, workflow_id: str) -> Response:
        def run(form: dict[str, str]) -> str:
            new_id = form.get("workflow_id") or None
            try:
                from_step = int(form.get("from_step", ""))
            except ValueError:
                raise ValueError("choose the step to fork from") from None
            handle = app.fork(workflow_id, from_step, new_id, actor=ACTOR)
            return f"/workflows/{_pathid(handle.workflow_id)}"

        return await act(request, run)

    @pages.post("/workflows/{workflow_id:path}/restart")
    async def restart(request: Request, workflow_id: str) -> Response:
        def run(form: dict[str, str]) -> str:
            handle = app.restart(workflow_id, form.get("workflow_id") or None, actor=ACTOR)
            return f"/workflows/{_pathid(handle.workflow_id)}"

        return await act(request, run)

    @pages.post("/workflows/{workflow_id:path}/send")
    async def send(request: Request, workflow_id: str) -> Response:
        def run(form: dict[str, str]) -> str:
            text = form.get("message", "").strip() or "null"
            try:
                message = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"the message must be JSON ({exc})") from None
            app.send(workflow_id, message, form.get("topic") or None, actor=ACTOR)
            return f"/workflows/{_pathid(workflow_id)}"

        return await act(request, run)

    @pages.get("/workflows/{workflow_id:path}")
    def workflow(request: Request, workflow_id: str) -> Response:
        session = visitor(request)
        try:
            context = workflow_context(workflow_id)
        except WorkflowNotFoundError:
            return missing(request, session, workflow_id)
        return page(request, "workflow.html", session, **context)

    # -- circuit breakers --------------------------------------------------------------

    @pages.get("/breakers")
    def breakers(request: Request) -> Response:
        session = visitor(request)
        return page(request, "breakers.html", session, breakers=app.breakers())

    @pages.post("/breakers/{name:path}/open")
    async def open_breaker(request: Request, name: str) -> Response:
        def run(form: dict[str, str]) -> str:
            app.open_breaker(name, float(form.get("seconds", "")), actor=ACTOR)
            return "/breakers"

        return await act(request, run)

    @pages.post("/breakers/{name:path}/close")
    async def close_breaker(request: Request, name: str) -> Response:
        def run(form: dict[str, str]) -> str:
            app.close_breaker(name, actor=ACTOR)
            return "/breakers"

        return await act(request, run)

    add_ops_pages(pages, app, page, visitor, act, ACTOR)
    api.include_router(pages)


def _form(body: bytes) -> dict[str, str]:
    # The pages post URL-encoded forms; parsed here rather than through FastAPI's Form,
    # which would need python-multipart for these few fields.
    text = body.decode("utf-8", "replace")
    return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=20))


def _filters(form: dict[str, str]) -> dict[str, Any]:
    return {
        "status": form.get("status") or None,
        "name": form.get("name") or None,
        "created_after": parse_time(form.get("created_after")),
        "created_before": parse_time(form.get("created_before")),
    }


def _only(params: Any, *names: str) -> dict[str, str]:
    return {name: params[name] for name in names if params.get(name)}

"""The dashboard's pages for queues and schedules (served like the others by ``_pages``).

The queues page shows each queue's limits in force and how many of its workflows run,
wait and are delayed, with a form that changes its limits (``app.update_queue``); the
schedules page shows each schedule's cron, time zone, next and last tick and whether it
is paused, with pause and resume buttons. Every change is a form post checked by
``_session`` (session cookie, CSRF token, origin) through ``_pages``' ``act``, and logged
as an operator action of ``dashboard``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .._app import App
from .._errors import ConfigurationError
from .._queue import Rate
from ._session import Session

#: A checked change: the form in, a path to go to (or a message) out.
Change = Callable[[dict[str, str]], str]


class Render(Protocol):
    """``_pages``' ``page``: a template rendered for the visitor's session."""

    def __call__(
        self,
        request: Request,
        name: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> Response: ...


def _limit(form: dict[str, str], field: str) -> int | None:
    """A limit from the form: blank for no limit, else a positive whole number."""
    text = form.get(field, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"{field.replace('_', ' ')} must be a whole number, or blank for none"
        ) from None
    return value


def _rate(form: dict[str, str]) -> Rate | None:
    """The rate from the form's two fields: both blank for no rate."""
    limit, per = form.get("rate_limit", "").strip(), form.get("rate_per", "").strip()
    if not limit and not per:
        return None
    try:
        return Rate(int(limit), float(per))
    except ValueError as exc:
        raise ValueError(f"the rate needs starts and seconds ({exc})") from None


def add_ops_pages(
    pages: APIRouter,
    app: App,
    page: Render,
    visitor: Callable[[Request], Session],
    act: Callable[[Request, Change], Awaitable[Response]],
    actor: str,
) -> None:
    """The queues' and the schedules' pages and their actions, on ``pages``."""

    def shown(request: Request, template: str, read: Callable[[], Any], name: str) -> Response:
        session = visitor(request)
        try:
            found = read()
        except ConfigurationError as exc:  # an app with regions: serve a region's app
            return page(request, "refused.html", session, 409, message=str(exc), error=True)
        return page(request, template, session, **{name: found})

    @pages.get("/queues")
    def queues(request: Request) -> Response:
        return shown(request, "queues.html", app.queues, "queues")

    @pages.post("/queues/{name:path}/limits")
    async def update_queue(request: Request, name: str) -> Response:
        def run(form: dict[str, str]) -> str:
            app.update_queue(
                name,
                concurrency=_limit(form, "concurrency"),
                worker_concurrency=_limit(form, "worker_concurrency"),
                key_concurrency=_limit(form, "key_concurrency"),
                rate=_rate(form),
                actor=actor,
            )
            return "/queues"

        return await act(request, run)

    @pages.get("/schedules")
    def schedules(request: Request) -> Response:
        return shown(request, "schedules.html", app.schedules, "schedules")

    @pages.post("/schedules/{name:path}/pause")
    async def pause(request: Request, name: str) -> Response:
        def run(form: dict[str, str]) -> str:
            app.pause_schedule(name, actor=actor)
            return "/schedules"

        return await act(request, run)

    @pages.post("/schedules/{name:path}/resume")
    async def resume(request: Request, name: str) -> Response:
        def run(form: dict[str, str]) -> str:
            app.resume_schedule(name, actor=actor)
            return "/schedules"

        return await act(request, run)

"""The dashboard's pages over real HTTP (uvicorn on a free port, httpx): who gets in, which
change is refused (no session, a missing or wrong CSRF token, another site's origin, a
forged cookie), and that every value is escaped. The browser's view of the same pages is
in test_web_browser.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from test_holds import Order, eventually
from test_web_api import TOKEN, serving, wait_for

import perdure
from perdure.web import create_app
from perdure.web._session import COOKIE

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browserless:
    """An HTTP client that keeps no cookie: each request carries the session it is given
    (as a browser would send the cookie), or none."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base)

    def __enter__(self) -> Browserless:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def get(self, path: str, session: str | None = None, **kw: Any) -> httpx.Response:
        return self.request("GET", path, session, **kw)

    def post(self, path: str, session: str | None = None, **kw: Any) -> httpx.Response:
        return self.request("POST", path, session, **kw)

    def request(self, method: str, path: str, session: str | None, **kw: Any) -> httpx.Response:
        self.http.cookies.clear()
        headers = dict(kw.pop("headers", {}))
        if session is not None:
            headers["Cookie"] = f"{COOKIE}={session}"
        return self.http.request(method, path, headers=headers, **kw)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


@pytest.fixture
def sqlite_app(tmp_path: Path) -> perdure.App:
    return perdure.App(f"sqlite:///{tmp_path}/perdure.db", poll_interval=0.05)


def define_waiter(app: perdure.App) -> None:
    @app.workflow(name="waiter")
    def waiter() -> str:
        return str(perdure.recv("go", timeout=120))


def test_pages_need_a_login_and_changes_need_the_csrf_token_and_this_origin(
    sqlite_app: perdure.App,
) -> None:
    app = sqlite_app
    define_waiter(app)
    with app, serving(app) as base, Browserless(base) as http:
        app.options(workflow_id="w1").start("waiter")
        # No session: pages go to the login form, fragments tell htmx to, changes too.
        assert http.get("/").status_code == 303
        assert http.get("/").headers["location"] == "/login"
        rows = http.get("/_rows", headers={"HX-Request": "true"})
        assert rows.status_code == 401 and rows.headers["HX-Redirect"] == "/login"
        assert http.post("/workflows/w1/cancel", data={"csrf_token": "x"}).status_code == 303
        login_page = http.get("/login")
        assert login_page.status_code == 200 and 'type="password"' in login_page.text
        # A wrong token gets no cookie; the right one an HttpOnly SameSite=Strict one.
        wrong = http.post("/login", data={"token": "not-the-token-at-all"})
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        evil = {"Origin": "http://evil.example"}
        assert http.post("/login", data={"token": TOKEN}, headers=evil).status_code == 403
        good = http.post("/login", data={"token": TOKEN}, headers={"Origin": base})
        assert good.status_code == 303
        cookie = good.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert "path=/" in cookie.lower()
        sid = good.cookies[COOKIE]
        listing = http.get("/", sid)
        assert listing.status_code == 200 and "w1" in listing.text
        assert "script-src 'self'" in listing.headers["content-security-policy"]
        assert listing.headers["x-frame-options"] == "DENY"
        page = http.get("/workflows/w1", sid)
        token = csrf_of(page.text)
        # A forged session: its MAC's last hex digit changed (never the same digit, which
        # would be the real session and cancel the workflow).
        forged = sid[:-1] + ("1" if sid[-1] == "0" else "0")
        # The changes refused: no CSRF token, a wrong one, another site's origin, a
        # forged or foreign session. Nothing is cancelled.
        refusals = [
            ({}, sid, {"Origin": base}, 403),
            ({"csrf_token": "0" * len(token)}, sid, {"Origin": base}, 403),
            ({"csrf_token": token}, sid, {"Origin": "http://evil.example"}, 403),
            ({"csrf_token": token}, sid, {"Origin": "null"}, 403),
            ({"csrf_token": token}, sid, {"Sec-Fetch-Site": "cross-site"}, 403),
            ({"csrf_token": token}, forged, {"Origin": base}, 303),
        ]
        for form, cookie, headers, status in refusals:
            refused = http.post("/workflows/w1/cancel", cookie, data=form, headers=headers)
            assert refused.status_code == status, (form, headers)
        with serving(app, token="another-token-0123456789") as other_base:
            other = http.get(f"{other_base}/", sid)
            assert other.status_code == 303  # a session of another token does not count
        record = app.store.get_workflow("w1")
        assert record is not None and record.cancel_requested_at is None
        assert app.store.list_actions("w1") == []
        # The session's own token from this site: done, and logged as the dashboard's.
        form = {"csrf_token": token}
        done = http.post("/workflows/w1/cancel", sid, data=form, headers={"Origin": base})
        assert done.status_code == 303 and done.headers["location"] == "/workflows/w1"
        wait_for(lambda: app.retrieve("w1").status().status == "CANCELLED")
        assert [(a.action, a.actor) for a in app.store.list_actions("w1")] == [
            ("cancel", "dashboard")
        ]
        # An error of an action taken through htmx lands in the page's notice.
        bad = http.post(
            "/workflows/w1/fork",
            sid,
            data={"csrf_token": token, "from_step": "9"},
            headers={"Origin": base, "HX-Request": "true"},
        )
        assert bad.status_code == 200 and bad.headers["HX-Retarget"] == "#notice"
        assert "recorded step" in bad.text
        # The API still needs its bearer token: the session cookie is not one.
        assert http.get("/api/workflows", sid).status_code == 401
        # Logging out ends the session in the browser.
        out = http.post("/logout", sid, data=form, headers={"Origin": base})
        assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]


def test_without_a_token_the_pages_answer_this_machine_only(sqlite_app: perdure.App) -> None:
    app = sqlite_app
    define_waiter(app)
    with app, serving(app, token=None) as base, Browserless(base) as http:
        app.options(workflow_id="w1").start("waiter")
        first = http.get("/workflows/w1")
        assert first.status_code == 200 and COOKIE in first.cookies
        sid = first.cookies[COOKIE]
        token = csrf_of(first.text)
        # Without its session (another site's form: no SameSite=Strict cookie), refused.
        blind = http.post("/workflows/w1/cancel", data={"csrf_token": token})
        assert blind.status_code == 403
        assert http.get("/", headers={"Host": "perdure.example"}).status_code == 403
        assert http.get("/login").status_code == 303  # nothing to log in to
        sent = http.post(
            "/workflows/w1/send",
            sid,
            data={"csrf_token": token, "topic": "go", "message": '"now"'},
            headers={"Origin": base},
        )
        assert sent.status_code == 303
        assert app.retrieve("w1").result(timeout=15) == "now"
        static = http.get("/static/htmx.min.js")
        assert static.status_code == 200 and "javascript" in static.headers["content-type"]
        assert http.get("/workflows/nobody").status_code == 404
        opened = http.get("/open", params={"id": "a/b c"})
        assert opened.status_code == 303 and opened.headers["location"] == "/workflows/a%2Fb%20c"


def test_every_value_is_escaped(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()
    evil = "<script>alert('x')</script>"

    @app.step(retry=perdure.Retry(max_attempts=1))
    def explode(text: str) -> None:
        raise ValueError(f"bad {text}")

    @app.workflow(name="escaper")
    def escaper(text: str) -> None:
        perdure.set_event("said", text)
        explode(text)

    with app, serving(app, token=None) as base, Browserless(base) as http:
        handle = app.options(workflow_id=f"id-{evil}").start(escaper, evil)
        wait_for(lambda: handle.status().status == "FAILED")
        pages = [
            http.get("/"),
            http.get("/workflows/" + quote(handle.workflow_id, safe="")),
            http.get("/_rows"),
        ]
        for page in pages:
            assert page.status_code == 200
            assert "<script>alert" not in page.text
            assert "&lt;script&gt;alert(" in page.text
        assert "Traceback" in pages[1].text and "ValueError" in pages[1].text


def test_create_app_serves_the_pages_under_a_mount_path(sqlite_app: perdure.App) -> None:
    outer = FastAPI()
    outer.mount("/ops", create_app(sqlite_app, token=TOKEN))
    with sqlite_app, serving(sqlite_app, asgi=outer) as base, Browserless(base) as http:
        assert http.get("/ops/").headers["location"] == "/ops/login"
        good = http.post("/ops/login", data={"token": TOKEN}, headers={"Origin": base})
        assert good.headers["location"] == "/ops/"
        assert "path=/ops" in good.headers["set-cookie"].lower()
        page = http.get("/ops/", good.cookies[COOKIE])
        assert 'src="/ops/static/htmx.min.js"' in page.text


def test_a_held_workflow_shows_what_differed_and_breakers_are_forced_from_their_page(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/perdure.db"
    flow = Order()
    old = perdure.App(url, poll_interval=0.05, suspend_after=0.1)
    flow.register(old, broken=False, is_async=False)
    with old:
        handle = old.start("order", workflow_id="order-1")  # type: ignore[arg-type]
        eventually(lambda: handle.status().suspended)
    app = perdure.App(url, poll_interval=0.05, suspend_after=0.1)
    flow.register(app, broken=True, is_async=False)

    @app.step(breaker=perdure.CircuitBreaker("payments", cooldown=600))
    def pay() -> None:
        pass

    with app, serving(app, token=None) as base, Browserless(base) as http:
        app.send("order-1", "m1", topic="go")
        eventually(lambda: handle.status().held)
        shown = http.get("/workflows/order-1")
        assert "Held: its code no longer replays its history" in shown.text
        for fact in ("the history records</dt><dd>charge", "the code called</dt><dd>reserve"):
            assert fact in shown.text
        assert "HELD" in http.get("/").text
        # The breakers' page: open by hand for a while, then close; both logged.
        page = http.get("/breakers")
        sid, token = page.cookies[COOKIE], csrf_of(page.text)
        assert 'data-name="payments"' in page.text and "CLOSED" in page.text
        origin = {"Origin": base}
        opened = http.post(
            "/breakers/payments/open",
            sid,
            data={"csrf_token": token, "seconds": "600"},
            headers=origin,
        )
        assert opened.status_code == 303 and opened.headers["location"] == "/breakers"
        assert app.breaker("payments").state == "OPEN"
        assert "OPEN" in http.get("/breakers", sid).text
        closed = http.post(
            "/breakers/payments/close", sid, data={"csrf_token": token}, headers=origin
        )
        assert closed.status_code == 303 and app.breaker("payments").state == "CLOSED"
        actions = app.store.list_actions()
        assert [(a.action, a.actor) for a in actions][-2:] == [
            ("open_breaker", "dashboard"),
            ("close_breaker", "dashboard"),
        ]


def test_bulk_resume_and_cancel_from_the_list(sqlite_app: perdure.App) -> None:
    app = sqlite_app
    broken = {"on": True}

    @app.step(retry=perdure.Retry(max_attempts=1))
    def step() -> str:
        if broken["on"]:
            raise RuntimeError("down")
        return "ok"

    @app.workflow(name="batch")
    def batch() -> str:
        return step()

    define_waiter(app)
    with app, serving(app, token=None) as base, Browserless(base) as http:
        handles = [app.options(workflow_id=f"b{n}").start(batch) for n in range(3)]
        app.options(workflow_id="w1").start("waiter")
        wait_for(lambda: all(h.status().status == "FAILED" for h in handles))
        unfiltered = http.get("/")
        assert 'id="bulk-resume"' not in unfiltered.text  # only once filtered
        listing = http.get("/", params={"status": "FAILED", "name": "batch"})
        assert 'id="bulk-resume"' in listing.text
        sid, token = listing.cookies[COOKIE], csrf_of(listing.text)
        origin = {"Origin": base, "HX-Request": "true"}
        refused = http.post(
            "/bulk/cancel", sid, data={"csrf_token": token, "status": "RUNNING"}, headers=origin
        )
        assert "needs a name or a creation time" in refused.text
        broken["on"] = False
        form = {"csrf_token": token, "status": "FAILED", "name": "batch"}
        resumed = http.post("/bulk/resume", sid, data=form, headers=origin)
        assert resumed.status_code == 200 and "3 workflow(s) resumed." in resumed.text
        assert [h.result(timeout=15) for h in handles] == ["ok", "ok", "ok"]
        form = {"csrf_token": token, "name": "waiter"}
        cancelled = http.post("/bulk/cancel", sid, data=form, headers=origin)
        assert "1 workflow(s) asked to cancel." in cancelled.text
        wait_for(lambda: app.retrieve("w1").status().status == "CANCELLED")
        # Without the CSRF token, nothing is resumed.
        forged = http.post("/bulk/resume", sid, data={"name": "waiter"}, headers=origin)
        assert forged.status_code == 403
        assert app.retrieve("w1").status().status == "CANCELLED"

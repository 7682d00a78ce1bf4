"""The HTTP API over real HTTP: uvicorn on a free port in a thread, an httpx client, every
endpoint and the refusals (no token, a wrong one, errors as JSON without secrets), on
both stores."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

import perdure
from perdure.web import check_bind, create_app, is_loopback
from perdure.web._security import scrub, secrets_of

TOKEN = "s3cret-token-for-tests-0123456789"


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(app: perdure.App, token: str | None = TOKEN, asgi: Any | None = None) -> Iterator[str]:
    """The API of ``app`` (or the ASGI app ``asgi``) on a free port of 127.0.0.1; its
    base URL."""
    port = free_port()
    served = asgi if asgi is not None else create_app(app, token=token)
    config = uvicorn.Config(served, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def define(app: perdure.App, broken: dict[str, bool]) -> None:
    @app.step(retry=perdure.Retry(max_attempts=1))
    def charge(amount: int) -> int:
        if broken["charge"]:
            raise RuntimeError("card declined")
        return amount * 2

    @app.workflow(name="checkout")
    def checkout(amount: int) -> int:
        return charge(amount)

    @app.workflow(name="waiter")
    def waiter() -> str:
        perdure.set_event("stage", "waiting")
        return str(perdure.recv("go", timeout=120))


def test_every_endpoint(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()
    broken = {"charge": True}
    define(app, broken)
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Perdure-Actor": "erin"}
    with app, serving(app) as base, httpx.Client(base_url=base, headers=auth) as http:
        # Start by name: 202 with a Location to poll.
        started = http.post("/api/workflows", json={"name": "checkout", "args": [21]})
        assert started.status_code == 202
        location = started.headers["Location"]
        workflow_id = started.json()["workflow_id"]
        assert location == f"/api/workflows/{workflow_id}"
        wait_for(lambda: http.get(location).json()["status"] == "FAILED")
        detail = http.get(location).json()
        assert detail["error"]["type"] == "builtins:RuntimeError"
        assert "card declined" in detail["error"]["traceback"]
        assert detail["inputs"] == {"args": [21], "kwargs": {}}
        steps = http.get(f"{location}/steps").json()["steps"]
        assert [(s["name"], s["status"]) for s in steps] == [("define.charge", "FAILED")]
        assert steps[0]["started_at"] and steps[0]["ended_at"]
        # Resume after the fix.
        broken["charge"] = False
        resumed = http.post(f"{location}/resume", json={})
        assert resumed.status_code == 202 and resumed.headers["Location"] == location
        wait_for(lambda: http.get(location).json()["status"] == "SUCCEEDED")
        assert http.get(location).json()["output"] == 42
        assert http.post(f"{location}/resume", json={}).status_code == 409  # succeeded: refused
        actions = http.get(f"{location}/actions").json()["actions"]
        assert [(a["action"], a["actor"]) for a in actions] == [("resume", "http:erin")]
        # Fork and restart.
        forked = http.post(f"{location}/fork", json={"from_step": 1, "workflow_id": "f1"})
        assert forked.status_code == 202 and forked.headers["Location"] == "/api/workflows/f1"
        restarted = http.post(f"{location}/restart", json={})
        assert restarted.status_code == 202
        for new in ("f1", restarted.json()["workflow_id"]):
            wait_for(
                lambda new=new: http.get(f"/api/workflows/{new}").json()["status"] == "SUCCEEDED"
            )
        assert http.get("/api/workflows/f1").json()["forked_from"] == workflow_id
        bad_fork = http.post(f"{location}/fork", json={"from_step": 9})
        assert bad_fork.status_code == 400 and "recorded step" in bad_fork.json()["error"]
        # Send, events, messages, cancel; an ID with a slash in it.
        http.post("/api/workflows", json={"name": "waiter", "workflow_id": "a/b"})
        wait_for(lambda: http.get("/api/workflows/a%2Fb/events").json()["events"] != {})
        assert http.get("/api/workflows/a%2Fb/events").json() == {"events": {"stage": "waiting"}}
        sent = http.post("/api/workflows/a%2Fb/send", json={"message": "x", "topic": "other"})
        assert sent.status_code == 202
        pending = http.get("/api/workflows/a%2Fb/messages", params={"pending": "true"}).json()
        assert [(m["topic"], m["payload"]) for m in pending["messages"]] == [("other", "x")]
        assert pending["messages"][0]["sent_at"].endswith("+00:00")
        assert http.get("/api/workflows/a%2Fb").json()["messages_waiting"][0]["topic"] == "other"
        assert http.post("/api/workflows/a%2Fb/cancel", json={}).json() == {
            "workflow_id": "a/b",
            "asked": True,
        }
        wait_for(lambda: http.get("/api/workflows/a%2Fb").json()["status"] == "CANCELLED")
        # Bulk resume by filter, then bulk cancel.
        bulk = http.post("/api/bulk/resume", json={"name": "waiter", "status": "cancelled"})
        assert bulk.json() == {"resumed": ["a/b"]}
        wait_for(lambda: http.get("/api/workflows/a%2Fb").json()["status"] == "RUNNING")
        assert http.post("/api/bulk/cancel", json={"name": "waiter"}).json() == {"asked": ["a/b"]}
        # Listing: filters (status in any case), pages.
        page = http.get("/api/workflows", params={"status": "succeeded", "limit": 2}).json()
        assert len(page["workflows"]) == 2 and page["next_cursor"]
        rest = http.get(
            "/api/workflows", params={"status": "SUCCEEDED", "cursor": page["next_cursor"]}
        ).json()
        ids = [w["workflow_id"] for w in page["workflows"] + rest["workflows"]]
        assert sorted(ids) == sorted([workflow_id, "f1", restarted.json()["workflow_id"]])
        assert rest["next_cursor"] is None
        assert http.get("/api/workflows", params={"status": "nap"}).status_code == 400
        assert http.get("/api/workflows", params={"cursor": "zz"}).status_code == 400
        # Breakers, unknown things, the schema.
        assert http.get("/api/breakers").json() == {"breakers": []}
        opened = http.post("/api/breakers/pay/open", json={"seconds": 60})
        assert opened.status_code == 200 and opened.json()["state"] == "OPEN"
        assert opened.json()["last_error"] == "opened by http:erin"
        assert [b["state"] for b in http.get("/api/breakers").json()["breakers"]] == ["OPEN"]
        assert http.post("/api/breakers/pay/open", json={"seconds": 0}).status_code == 422
        closed = http.post("/api/breakers/pay/close", json={})
        assert closed.json()["state"] == "CLOSED" and closed.json()["woken"] == 0
        logged = app.store.list_actions("perdure.breaker:pay")
        assert [(a.action, a.actor) for a in logged] == [
            ("open_breaker", "http:erin"),
            ("close_breaker", "http:erin"),
        ]
        missing = http.get("/api/workflows/nope")
        assert missing.status_code == 404 and missing.json()["type"] == "WorkflowNotFoundError"
        unknown = http.post("/api/workflows", json={"name": "nope"})
        assert unknown.status_code == 404
        assert http.post("/api/workflows/nope/send", json={"message": 1}).status_code == 404
        # A change needs a JSON request: a web page cannot send one to another site
        # without asking first (a form or text POST is refused, and changes nothing).
        for content in ({"content": b""}, {"data": {"x": "1"}}, {"content": b"{}"}):
            refused = http.post("/api/bulk/cancel", **content)  # type: ignore[arg-type]
            assert refused.status_code == 415, refused.text
        schema = http.get("/openapi.json").json()
        assert "/api/workflows/{workflow_id}/resume" in schema["paths"]
        assert http.get("/docs").status_code == 404  # no page that loads from the internet


def test_auth_refusals(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()
    define(app, {"charge": False})
    with serving(app) as base, httpx.Client(base_url=base) as http:
        for method, path in (
            ("GET", "/api/workflows"),
            ("GET", "/api/workflows/x"),
            ("POST", "/api/workflows/x/cancel"),
            ("POST", "/api/workflows/x/resume"),
            ("GET", "/api/breakers"),
        ):
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token-wrong-token"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {TOKEN}x"},
            ):
                response = http.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                assert response.headers["WWW-Authenticate"] == "Bearer"
                assert TOKEN not in response.text
        # Nothing was done.
        assert app.store.list_workflows() == []
        good = http.get("/api/workflows", headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200 and good.json() == {"workflows": [], "next_cursor": None}


def test_without_a_token_on_loopback_errors_are_json(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()
    with serving(app, token=None) as base, httpx.Client(base_url=base) as http:
        assert http.get("/api/workflows").status_code == 200
        # Without a token, only requests to this machine's names are answered (no relay,
        # no DNS rebinding).
        for host in ("evil.example", "10.0.0.1:8000"):
            rebound = http.get("/api/workflows", headers={"Host": host})
            assert rebound.status_code == 403 and "token" in rebound.json()["error"]
        assert http.get("/api/workflows", headers={"Host": "localhost:1"}).status_code == 200
        response = http.post("/api/workflows", json={"name": "x", "workflow_id": "\x00"})
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "InvalidValueError"
        assert response.headers["content-type"].startswith("application/json")


def test_binding_and_tokens_are_checked() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(perdure.ConfigurationError, match="without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(perdure.ConfigurationError, match="at least 16"):
        create_app(perdure.App("sqlite:///unused.db"), token="short")


def test_a_password_in_an_error_is_scrubbed() -> None:
    secrets = secrets_of("postgresql://app:hunter2secret@db/shop?password=other-pass")
    text = scrub("could not connect as app:hunter2secret with other-pass", secrets)
    assert "hunter2secret" not in text and "other-pass" not in text


def test_mounted_in_a_users_app(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()
    define(app, {"charge": False})
    users = FastAPI()

    @users.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    users.mount("/perdure", create_app(app, token=TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with app, serving(app, asgi=users) as base, httpx.Client(base_url=base) as http:
        assert http.get("/hello").json() == {"hello": "world"}
        assert http.get("/perdure/api/workflows").status_code == 401
        started = http.post(
            "/perdure/api/workflows", json={"name": "checkout", "args": [2]}, headers=auth
        )
        location = started.headers["Location"]
        assert location.startswith("/perdure/api/workflows/")
        wait_for(lambda: http.get(location, headers=auth).json()["status"] == "SUCCEEDED")
        assert http.get(location, headers=auth).json()["output"] == 4

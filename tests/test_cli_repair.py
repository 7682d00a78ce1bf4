"""``perdure resume``, ``fork``, ``restart``, ``send``, ``serve`` and what ``status`` and
``list`` show now (issue 12), on both stores: real processes for ``serve``, click's runner
(the same command objects) for the rest."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

import perdure
from perdure._cli import cli

TESTS_DIR = Path(__file__).resolve().parent


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def failing_app(make_app: Callable[..., perdure.App], broken: dict[str, bool]) -> perdure.App:
    app = make_app()

    @app.step
    def check(order: str) -> str:
        return f"checked {order}"

    @app.step
    def charge(order: str) -> str:
        if broken["charge"]:
            raise ValueError("card declined")
        return f"charged {order}"

    @app.workflow(name="checkout")
    def checkout(order: str) -> str:
        return f"{check(order)}, {charge(order)}"

    @app.workflow(name="waiter")
    def waiter() -> str:
        return str(perdure.recv("go", timeout=120))

    return app


def test_resume_fork_restart_and_status(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    broken = {"charge": True}
    app = failing_app(make_app, broken)
    url = ("--database-url", database_url)
    with app, pytest.raises(ValueError):
        app.options(workflow_id="o1").run("checkout", "x")
    # The failure, in full.
    code, out, _ = run("status", "o1", *url)
    assert code == 0, out
    lines = out.splitlines()
    assert '  inputs: {"args": ["x"], "kwargs": {}}' in lines
    assert "  error: ValueError: card declined" in lines
    assert "  traceback:" in lines and any("raise ValueError" in line for line in lines)
    step_lines = [line for line in lines if line.startswith("  [")]
    assert len(step_lines) == 2 and all(", started " in line for line in step_lines)
    code, out, _ = run("status", "o1", "--json", *url)
    data = json.loads(out)
    assert data["error"] == "ValueError: card declined"
    assert "card declined" in data["error_detail"]["traceback"]
    assert data["steps"][0]["started_at"] and data["steps"][0]["output"] == "checked x"
    # Resume, then run it with the fix.
    code, out, _ = run("resume", "o1", "--actor", "alice", *url)
    assert code == 0 and "resumed" in out, out
    code, out, _ = run("resume", "o1", *url)
    assert code == 1 and "PENDING" in out + _, out  # already resumed: refused
    broken["charge"] = False
    with app:
        assert app.retrieve("o1").result(timeout=15) == "checked x, charged x"
        code, out, _ = run("fork", "o1", "--from-step", "1", "--new-id", "f1", *url)
        assert code == 0 and out.strip() == "f1"
        code, out, _ = run("restart", "o1", *url)
        restarted = out.strip()
        assert code == 0 and restarted
        assert app.retrieve("f1").result(timeout=15) == "checked x, charged x"
        assert app.retrieve(restarted).result(timeout=15) == "checked x, charged x"
        code, out, err = run("fork", "o1", "--from-step", "7", *url)
        assert code == 1 and "2 recorded step(s)" in err, (out, err)
    code, out, _ = run("status", "o1", *url)
    assert "  resumed 1 time(s)" in out and "resume by alice" in out
    assert "fork by " in out and "-> f1" in out and "restart by " in out
    assert '  output: "checked x, charged x"' in out
    code, out, _ = run("status", "f1", *url)
    assert "  forked from o1 (its first 1 step(s))" in out


def test_send_bulk_resume_and_list(make_app: Callable[..., perdure.App], database_url: str) -> None:
    broken = {"charge": True}
    app = failing_app(make_app, broken)
    url = ("--database-url", database_url)
    with app:
        for n in range(3):
            with pytest.raises(ValueError):
                app.options(workflow_id=f"b{n}").run("checkout", str(n))
        app.options(workflow_id="w").start("waiter")
        code, out, err = run("send", "w", "not json", *url)
        assert code == 1 and "must be JSON" in err
        code, out, _ = run("send", "w", '"go!"', "--topic", "go", "--actor", "carol", *url)
        assert code == 0 and "message sent" in out
        assert app.retrieve("w").result(timeout=15) == "go!"
        code, out, err = run("send", "w", "1", *url)
        assert code == 1 and "already finished" in err
        # Listing: time filters, pages, JSON.
        code, out, err = run("list", "--status", "failed", "--limit", "2", *url)
        assert code == 0 and len(out.splitlines()) == 2 and "more: --cursor " in err
        cursor = err.split("--cursor ")[1].split()[0]
        code, out, err = run("list", "--status", "failed", "--limit", "2", "--cursor", cursor, *url)
        assert [line.split()[-1] for line in out.splitlines()] == ["b0"] and "more" not in err
        code, out, _ = run("list", "--json", "--name", "checkout", *url)
        listed = json.loads(out)
        assert [w["workflow_id"] for w in listed["workflows"]] == ["b2", "b1", "b0"]
        assert listed["next_cursor"] is None
        code, out, _ = run("list", "--created-after", "2999-01-01", *url)
        assert code == 0 and out == ""
        # Bulk resume by filter.
        broken["charge"] = False
        code, out, err = run("resume", "--status", "FAILED", "--name", "checkout", *url)
        assert code == 0 and "3 workflow(s) resumed" in err, (out, err)
        for n in range(3):
            assert app.retrieve(f"b{n}").result(timeout=15) == f"checked {n}, charged {n}"
        code, out, err = run("resume", "b0", "--name", "checkout", *url)
        assert code == 1 and "not both" in err
        # Bulk cancel by filter; a bare cancel is refused.
        for n in range(2):
            app.options(workflow_id=f"w{n}").start("waiter")
        code, out, err = run("cancel", *url)
        assert code == 1 and "give a WORKFLOW_ID, or filters" in err
        code, out, err = run("cancel", "--name", "waiter", "--status", "failed", *url)
        assert code == 1 and "only PENDING, RUNNING" in err
        code, out, err = run("cancel", "--name", "waiter", "--actor", "ops", *url)
        assert code == 0 and "2 workflow(s) asked to cancel" in err, (out, err)
        assert sorted(out.splitlines()) == [
            "workflow w0: cancel requested",
            "workflow w1: cancel requested",
        ]
        for n in range(2):
            with pytest.raises(perdure.WorkflowCancelledError):
                app.retrieve(f"w{n}").result(timeout=15)
    actions = [(a.action, a.actor) for a in app.store.list_actions("w")]
    assert actions == [("send", "carol")]


def test_serve_refuses_another_address_without_a_token(tmp_path: Path) -> None:
    code, out, err = run("serve", "crash_app:app", "--host", "0.0.0.0")
    assert code == 1 and "without a token" in out + err


@pytest.mark.slow
def test_serve_answers_over_http(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PERDURE_DATABASE_URL"] = f"sqlite:///{tmp_path}/served.db"
    env["PERDURE_API_TOKEN"] = "a-token-of-enough-length"
    inherited = filter(None, env.get("PYTHONPATH", "").split(os.pathsep))
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *map(os.path.abspath, inherited)])
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "perdure", "serve", "crash_app:app", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/api/workflows",
                    headers={"Authorization": "Bearer a-token-of-enough-length"},
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "perdure serve did not answer"
                time.sleep(0.1)
        assert response.status_code == 200 and response.json()["workflows"] == []
        assert httpx.get(f"http://127.0.0.1:{port}/api/workflows").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        if proc.stderr:
            log = proc.stderr.read()
            proc.stderr.close()
            assert "a-token-of-enough-length" not in log


def test_breakers_opened_and_closed_by_hand(
    database_url: str, make_app: Callable[..., perdure.App]
) -> None:
    make_app().store.list_workflows()  # creates the database
    url = ("--database-url", database_url)
    code, out, err = run("breakers", "--open", "payments", "--seconds", "120", *url)
    assert code == 0 and out.startswith("payments  OPEN  probe attempt from "), out
    code, out, err = run("breakers", "--close", "payments", "--actor", "ops", *url)
    assert code == 0 and "closed: 0 workflow(s) woken" in err and "payments  CLOSED" in out
    code, out, err = run("breakers", "--open", "p", "--seconds", "0", *url)
    assert code == 2

"""Held workflows: a workflow whose code no longer replays its history is held, not
failed, and resumes by itself once code that replays it runs (on both stores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import perdure
from perdure._fingerprint import fingerprint

TESTS_DIR = Path(__file__).resolve().parent


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def perdure_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PERDURE_DATABASE_URL", None)
    inherited = filter(None, env.get("PYTHONPATH", "").split(os.pathsep))
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *map(os.path.abspath, inherited)])
    return subprocess.run(
        [sys.executable, "-m", "perdure", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


class Order:
    """An order workflow that charges, then waits for two messages, then ships; the
    ``broken`` variant calls another step first (so it cannot replay a started order)."""

    def __init__(self) -> None:
        self.ledger: list[str] = []
        self.entered: list[str] = []

    def register(self, app: perdure.App, *, broken: bool, is_async: bool) -> None:
        ledger, entered = self.ledger, self.entered

        @app.step(name="charge")
        def charge() -> int:
            ledger.append("charge")
            return 1

        @app.step(name="reserve")
        def reserve() -> int:
            ledger.append("reserve")
            return 0

        @app.step(name="ship")
        def ship() -> str:
            ledger.append("ship")
            return "shipped"

        # Four functions, not one with a flag: the broken code must *be* other code (a
        # held workflow is retried at once only by code with another fingerprint).
        if is_async and broken:

            @app.workflow(name="order")
            async def broken_async() -> str:
                entered.append("broken")
                first = reserve()
                one = await perdure.recv_async("go", timeout=600)
                two = await perdure.recv_async("go", timeout=600)
                return f"{first}:{one}:{two}:{ship()}"

        elif is_async:

            @app.workflow(name="order")
            async def order_async() -> str:
                entered.append("ok")
                first = charge()
                one = await perdure.recv_async("go", timeout=600)
                two = await perdure.recv_async("go", timeout=600)
                return f"{first}:{one}:{two}:{ship()}"

        elif broken:

            @app.workflow(name="order")
            def broken_sync() -> str:
                entered.append("broken")
                first = reserve()
                one = perdure.recv("go", timeout=600)
                two = perdure.recv("go", timeout=600)
                return f"{first}:{one}:{two}:{ship()}"

        else:

            @app.workflow(name="order")
            def order() -> str:
                entered.append("ok")
                first = charge()
                one = perdure.recv("go", timeout=600)
                two = perdure.recv("go", timeout=600)
                return f"{first}:{one}:{two}:{ship()}"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_workflow_whose_code_no_longer_replays_is_held_and_resumes_on_compatible_code(
    make_app: Callable[..., perdure.App], database_url: str, is_async: bool
) -> None:
    flow = Order()
    old = make_app(suspend_after=0.1)
    flow.register(old, broken=False, is_async=is_async)
    with old:
        handle = old.start("order", workflow_id="order-1")  # type: ignore[arg-type]
        eventually(lambda: handle.status().suspended)
    assert flow.ledger == ["charge"]

    # New code calls another step first: the message wakes the order, its replay differs.
    broken = make_app(suspend_after=0.1)
    flow.register(broken, broken=True, is_async=is_async)
    with broken:
        broken.send("order-1", "m1", topic="go")
        held = eventually(lambda: handle.status().held)
        status = handle.status()
        assert status.status == "RUNNING" and not status.done and status.owner is None
        assert (held.position, held.recorded, held.actual) == ("0", "charge", "reserve")
        assert held.app_version == status.app_version
        assert status.note is not None and "held" in status.note and "'reserve'" in status.note
        assert "held" in (status.waiting_for or "")
        # A message sent while it is held is kept for it.
        broken.send("order-1", "m2", topic="go")
        # The same code does not spin on it: no second replay before its recheck time.
        time.sleep(1.0)
        assert flow.entered == ["ok", "broken"]
        assert handle.status().held == held
    # Another executor with the same (broken) code leaves it alone too.
    again = make_app(suspend_after=0.1)
    flow.register(again, broken=True, is_async=is_async)
    with again:
        time.sleep(1.0)
    assert flow.entered == ["ok", "broken"]
    assert [s.name for s in handle.status().steps] == ["charge", "perdure.recv"]

    # The operator sees it held, and what differed, through the command (a real process).
    shown = perdure_cli("status", "order-1", "--database-url", database_url)
    assert shown.returncode == 0, shown.stderr
    assert "held since" in shown.stdout
    assert "position 0" in shown.stdout and "'charge'" in shown.stdout
    assert "'reserve'" in shown.stdout
    as_json = perdure_cli("status", "order-1", "--json", "--database-url", database_url)
    assert as_json.returncode == 0, as_json.stderr
    exported = json.loads(as_json.stdout)["held"]
    assert (exported["position"], exported["recorded"], exported["actual"]) == (
        "0",
        "charge",
        "reserve",
    )
    listed = perdure_cli("list", "--database-url", database_url)
    assert "order-1" in listed.stdout and "held since" in listed.stdout
    versions = perdure_cli("versions", "--database-url", database_url)
    assert versions.returncode == 0, versions.stderr
    assert "version 1: 1 active (1 held)" in versions.stdout

    # Compatible code (a rollback): it resumes by itself and completes.
    fixed = make_app(suspend_after=0.1)
    flow.register(fixed, broken=False, is_async=is_async)
    with fixed:
        assert fixed.retrieve("order-1").result(timeout=20) == "1:m1:m2:shipped"
    status = handle.status()
    assert status.status == "SUCCEEDED" and status.held is None and status.note is None
    # Nothing ran or was recorded twice; the broken code's step never ran.
    assert flow.ledger == ["charge", "ship"]
    assert [s.name for s in status.steps] == ["charge", "perdure.recv", "perdure.recv", "ship"]
    assert flow.entered == ["ok", "broken", "ok"]


def test_a_workflow_that_catches_the_difference_is_held_all_the_same(
    make_app: Callable[..., perdure.App],
) -> None:
    old = make_app()

    @old.step(name="a")
    def a() -> int:
        return 1

    @old.workflow(name="w")
    def w() -> int:
        a()
        perdure.recv(timeout=600)
        return 1

    with old:
        handle = old.start("w", workflow_id="w-1")  # type: ignore[arg-type]
        eventually(lambda: handle.status().suspended)

    new = make_app()

    @new.step(name="b")
    def b() -> int:
        return 2

    @new.workflow(name="w")
    def w_new() -> int:
        try:
            b()
        except Exception:  # noqa: BLE001 - the code must not be able to fail it this way
            return -1
        return 2

    with new:
        new.send("w-1", "go")
        held = eventually(lambda: handle.status().held)
        assert (held.recorded, held.actual) == ("a", "b")
        assert handle.status().status == "RUNNING"


def test_versions_lists_active_workflows_per_version(
    make_app: Callable[..., perdure.App],
) -> None:
    one, two = make_app(app_version="1"), make_app(app_version="2")
    for app in (one, two):

        @app.workflow(name="noop")
        def noop() -> None:
            return None

    assert one.versions() == []
    first = one.start("noop")  # type: ignore[arg-type]
    one.start("noop")  # type: ignore[arg-type]
    two.start("noop")  # type: ignore[arg-type]
    found = one.versions()
    assert [(v.app_version, v.active, v.held) for v in found] == [("1", 2, 0), ("2", 1, 0)]
    assert found[0].oldest_created_at == first.status().created_at


#: Which step the helper-driven workflow calls first: a change the fingerprint cannot see.
FIRST_STEP = {"name": "charge"}


def test_an_operator_retries_a_hold_after_a_fix_the_fingerprint_cannot_see(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    app = make_app(suspend_after=0.1)
    calls: list[str] = []

    @app.step(name="charge")
    def charge() -> str:
        calls.append("charge")
        return "charged"

    @app.step(name="reserve")
    def reserve() -> str:
        calls.append("reserve")
        return "reserved"

    def first() -> str:  # a helper: not part of the code fingerprint
        return charge() if FIRST_STEP["name"] == "charge" else reserve()

    @app.workflow(name="helped")
    def helped() -> str:
        done = first()
        return f"{done}:{perdure.recv(timeout=600)}"

    with app:
        handle = app.start("helped", workflow_id="h-1")  # type: ignore[arg-type]
        eventually(lambda: handle.status().suspended)
        FIRST_STEP["name"] = "reserve"  # the "deploy" of a broken helper
        try:
            app.send("h-1", "go")
            held = eventually(lambda: handle.status().held)
            assert (held.recorded, held.actual) == ("charge", "reserve")
            FIRST_STEP["name"] = "charge"  # the fix, in the helper only: same fingerprint
            time.sleep(0.5)
            assert handle.status().held is not None  # this code waits for its recheck
        finally:
            FIRST_STEP["name"] = "charge"
        retried = perdure_cli("retry-held", "h-1", "--database-url", database_url)
        assert retried.returncode == 0, retried.stderr
        assert "tries it now" in retried.stdout
        assert handle.result(timeout=20) == "charged:go"
    assert calls == ["charge"]  # recorded once, never run again; the broken branch never ran
    assert handle.retry_hold() is False  # finished: not held


def test_a_workflow_fingerprint_is_the_same_in_every_process_and_names_its_code() -> None:
    script = (
        "import crash_app; from perdure._fingerprint import fingerprints; "
        "print(' '.join(sorted(fingerprints(crash_app.app.registry))))"
    )
    found = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        inherited = filter(None, env.get("PYTHONPATH", "").split(os.pathsep))
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *map(os.path.abspath, inherited)])
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        found.add(done.stdout)
    assert len(found) == 1  # string hashing (frozenset order) does not change it
    assert len(found.pop().split()) >= 1  # crash_app registers workflows

    def make(tag: str, extra: bool) -> perdure.App:
        app = perdure.App("sqlite:///unused.db")

        @app.workflow(name="w")
        def w() -> str:
            return "x" if tag in {"a", "b", "c"} else "y"

        if extra:

            @app.workflow(name="other")
            def other() -> None:
                return None

        return app

    one, two = make("a", False), make("b", True)
    assert fingerprint(one.registry.workflows["w"]) == fingerprint(two.registry.workflows["w"])
    assert fingerprint(one.registry.workflows["w"]) != fingerprint(two.registry.workflows["other"])

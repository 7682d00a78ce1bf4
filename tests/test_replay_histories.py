"""``perdure.testing.replay``: the current code against a recorded history, exported by
``perdure history ID --json`` (on both stores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import perdure
from perdure.testing import history, replay

TESTS_DIR = Path(__file__).resolve().parent


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


def checkout(app: perdure.App, ledger: list[str], *, reordered: bool = False) -> None:
    @app.step(name="reserve")
    def reserve(item: str) -> str:
        ledger.append("reserve")
        return f"r-{item}"

    @app.step(name="charge")
    def charge(amount: int) -> str:
        ledger.append("charge")
        return f"c-{amount}"

    if reordered:

        @app.workflow(name="checkout")
        def checkout_reordered(item: str, amount: int) -> str:
            paid = charge(amount)
            stamp = perdure.now()
            return f"{reserve(item)}/{paid}/{stamp.year}"

    else:

        @app.workflow(name="checkout")
        def checkout_flow(item: str, amount: int) -> str:
            held = reserve(item)
            stamp = perdure.now()
            return f"{held}/{charge(amount)}/{stamp.year}"


def test_a_replay_passes_on_the_recorded_code_and_fails_on_a_reordered_one(
    make_app: Callable[..., perdure.App], database_url: str, tmp_path: Path
) -> None:
    ledger: list[str] = []
    app = make_app()
    checkout(app, ledger)
    with app:
        result = app.start("checkout", "book", 12, workflow_id="c-1").result(timeout=10)  # type: ignore[arg-type]
    assert ledger == ["reserve", "charge"]

    # Exported by the command, as a real process.
    exported = perdure_cli("history", "c-1", "--json", "--database-url", database_url)
    assert exported.returncode == 0, exported.stderr
    path = tmp_path / "c-1.json"
    path.write_text(exported.stdout)
    data = json.loads(exported.stdout)
    assert data["format"] == "perdure.history/1"
    assert [s["name"] for s in data["steps"]] == ["reserve", "perdure.now", "charge"]
    assert data == json.loads(json.dumps(history(app, "c-1")))

    same = make_app()
    checkout(same, ledger)
    replayed = replay(same, path)
    assert replayed.outcome is not None and replayed.replayed == 3
    assert same.serializer.loads(replayed.outcome.output or "", str) == result
    assert ledger == ["reserve", "charge"]  # a replay runs no step

    reordered = make_app()
    checkout(reordered, ledger, reordered=True)
    with pytest.raises(AssertionError) as info:
        replay(reordered, path)
    assert str(info.value) == (
        "the code no longer replays workflow 'c-1' (checkout): at position 0 the history "
        "records step 'reserve' but the code now calls 'charge'"
    )
    assert ledger == ["reserve", "charge"]

    # Code that ends early, or returns something else, does not replay it either.
    shorter = make_app()

    @shorter.step(name="reserve")
    def reserve(item: str) -> str:
        return f"r-{item}"

    @shorter.workflow(name="checkout")
    def checkout_short(item: str, amount: int) -> str:
        return reserve(item)

    with pytest.raises(AssertionError, match=r"without reaching the recorded position\(s\) 1"):
        replay(shorter, path)


def test_a_replay_of_a_waiting_workflow_stops_where_its_history_ends(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app(suspend_after=0.1)
    calls: list[str] = []

    @app.step(name="ask")
    async def ask() -> str:
        calls.append("ask")
        return "asked"

    @app.workflow(name="approval")
    async def approval() -> str:
        await ask()
        answer = await perdure.recv_async("answer", timeout=600)
        await ask()
        return str(answer)

    with app:
        handle = app.start("approval", workflow_id="a-1")  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while not handle.status().suspended:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    exported = history(app, "a-1")
    result = replay(app, exported)
    assert (result.outcome, result.stopped_at, result.replayed) == (None, "1", 1)
    assert calls == ["ask"]
    with pytest.raises(ValueError, match="not a perdure history"):
        replay(app, {"steps": []})


def register_parent(app: perdure.App, ran: list[str]) -> None:
    @app.step(name="work")
    def work(n: int) -> int:
        ran.append(f"work{n}")
        return n * 10

    @app.workflow(name="child")
    def child(n: int) -> int:
        return work(n)

    @app.workflow(name="parent")
    def parent() -> int:
        handle = app.start(child, 2)
        perdure.sleep(0.01)
        stamp = perdure.uuid4()
        perdure.set_event("stamp", str(stamp))
        return work(1) + handle.result()


def test_a_replay_touches_no_database_of_the_app(
    make_app: Callable[..., perdure.App], tmp_path: Path
) -> None:
    ran: list[str] = []
    app = make_app()
    register_parent(app, ran)
    with app:
        assert app.start("parent", workflow_id="p-1").result(timeout=20) == 30  # type: ignore[arg-type]
    exported = history(app, "p-1")
    assert [s["name"] for s in exported["steps"]] == [
        "perdure.start_child",
        "perdure.sleep",
        "perdure.uuid4",
        "perdure.set_event",
        "work",
        "perdure.child_result",
    ]
    # The same code on an app whose database cannot even be created: nothing opens it.
    nowhere = perdure.App(f"sqlite:///{tmp_path}/missing/folder/x.db")
    register_parent(nowhere, ran)
    result = replay(nowhere, exported)
    assert result.outcome is not None and result.replayed == 6
    assert ran == ["work2", "work1"] or ran == ["work1", "work2"]
    assert not (tmp_path / "missing").exists()

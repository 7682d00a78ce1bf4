"""Process-level crash tests: worker subprocesses killed with SIGKILL, then recovered.

The app under test is ``tests/crash_app.py``. Its steps write a ledger (one line per
step start and end, with the PID of the process running the step), from which the
tests tell exactly which steps ran more than once and in which process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ledger import parse_ledger, read_ledger, wait_for

pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parent
WORKFLOWS = 200
KILLS = 5


def load_crash_app() -> ModuleType:
    """Import tests/crash_app.py by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("perdure_crash_app", TESTS_DIR / "crash_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


crash_app = load_crash_app()


# -- helpers ------------------------------------------------------------------------------


class Worker:
    """One ``perdure worker crash_app:app`` subprocess, its output in files in tmp_path."""

    def __init__(self, tmp_path: Path, env: dict[str, str], number: int) -> None:
        self.name = f"worker-{number}"
        self.stdout_path = tmp_path / f"{self.name}.out"
        self.stderr_path = tmp_path / f"{self.name}.err"
        self.started_at = time.time()
        # The child gets its own copies of the descriptors: ours can close at once.
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "perdure", "worker", "crash_app:app"],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self.pid = self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"{self.name} exited with {code}:\n{self.stderr()}")

    def kill(self) -> None:
        """SIGKILL, and reap it: a new worker takes a dead process's workflows over at
        once, and a zombie counts as dead, but an unreaped PID must not linger."""
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL, self.stderr()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[], Worker]]:
    """Start workers with ``workers()``; every one still running at the end is killed."""
    env = dict(os.environ)
    env["PERDURE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'perdure.db'}"
    env["PERDURE_LEDGER"] = str(tmp_path / "ledger.jsonl")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    started: list[Worker] = []

    def start() -> Worker:
        worker = Worker(tmp_path, env, len(started) + 1)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    """An app on the test database that is never launched: it only starts and reads."""
    # Four slashes: an absolute path (tmp_path is absolute).
    app = crash_app.build_app(f"sqlite:///{tmp_path / 'perdure.db'}")
    assert app.database_url.startswith("sqlite:////")
    yield app
    app.shutdown()


def first_line_delay(ledger: Path, worker: Worker) -> float:
    """Seconds from the worker's start to the first ledger line it wrote."""
    mine = [e for e in read_ledger(ledger) if e["pid"] == worker.pid]
    assert mine, f"{worker.name} wrote no ledger line"
    return float(mine[0]["t"]) - worker.started_at


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def check_ledger(
    entries: list[dict[str, Any]], killed: list[int], final: int
) -> dict[int, list[tuple[str, str, bool]]]:
    """Check the exactly-once-unless-killed invariants of the checkout ledger; return, per
    killed PID, the runs that were in flight at its kill and ran again, as
    (workflow, step, whether the step function had returned before the kill)."""
    assert entries, "the ledger is empty"
    assert {e["pid"] for e in entries} <= {*killed, final}, "a step ran in an unknown process"
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    ends: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    last_start_of: dict[tuple[int, str], int] = {}  # (pid, workflow) -> index of its last start
    for e in entries:
        assert e["step"] in crash_app.CHECKOUT_STEPS, e
        assert e["phase"] in ("start", "end"), e
        if e["phase"] == "start":
            runs[e["wf"], e["step"]].append(e)
            last_start_of[e["pid"], e["wf"]] = e["i"]
        else:
            ends[e["wf"], e["step"], e["pid"]].append(e)

    repeated: dict[int, list[tuple[str, str, bool]]] = defaultdict(list)
    workflows = {f"order-{n}" for n in range(WORKFLOWS)}
    for workflow in workflows:
        previous_end = -1
        for step in crash_app.CHECKOUT_STEPS:
            starts = runs.get((workflow, step), [])
            assert starts, f"{workflow} {step} never started"
            # The run that counted is the last one: once a step is recorded, it never runs
            # again. It ended in the process that started it, after starting.
            last = starts[-1]
            own_ends = [
                e for e in ends.get((workflow, step, last["pid"]), []) if e["i"] > last["i"]
            ]
            assert own_ends, f"{workflow} {step}: its last run (pid {last['pid']}) never ended"
            # A step starts only after the step before it completed and was recorded.
            assert all(s["i"] > previous_end for s in starts), (
                f"{workflow} {step} started before the previous step had ended"
            )
            previous_end = own_ends[0]["i"]
            # Every earlier run was in a process that was killed, one per kill, and was
            # that process's last step of this workflow: the step in flight at the kill.
            earlier = starts[:-1]
            pids = [s["pid"] for s in earlier]
            assert set(pids) <= set(killed), (
                f"{workflow} {step} ran more than once outside a kill: pids {pids}, "
                f"killed {killed}, final {final}"
            )
            assert len(set(pids)) == len(pids), f"{workflow} {step} ran twice in one process"
            assert last["pid"] not in pids, f"{workflow} {step} ran twice in pid {last['pid']}"
            for s in earlier:
                assert last_start_of[s["pid"], workflow] == s["i"], (
                    f"{workflow} {step} ran again although pid {s['pid']} went on to a later "
                    "step of the workflow (it was recorded, not in flight)"
                )
                ended = any(e["i"] > s["i"] for e in ends.get((workflow, step, s["pid"]), []))
                repeated[s["pid"]].append((workflow, step, ended))
    last = crash_app.CHECKOUT_STEPS[-1]
    for pid, in_flight in repeated.items():
        # At most one step per workflow was in flight, and one per thread (running, or
        # its record being written before the workflow's next step), but for a
        # workflow's last step that had returned: its record goes with the outcome,
        # which the thread does not wait for (it goes on to the next workflow).
        assert len({workflow for workflow, _, _ in in_flight}) == len(in_flight)
        in_threads = [run for run in in_flight if not (run[1] == last and run[2])]
        assert len(in_threads) <= crash_app.MAX_THREADS, (pid, in_flight)
    return repeated


# -- the tests ------------------------------------------------------------------------------


def test_checkouts_survive_repeated_sigkill(
    tmp_path: Path, workers: Callable[[], Worker], client: Any
) -> None:
    seed = int(os.environ.get("PERDURE_CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed: {seed} (set PERDURE_CRASH_SEED={seed} to repeat the kill plan)")
    rng = random.Random(seed)
    began = time.monotonic()
    db = tmp_path / "perdure.db"
    ledger = tmp_path / "ledger.jsonl"
    total_lines = WORKFLOWS * len(crash_app.CHECKOUT_STEPS) * 2

    # The client app is not launched: the checkouts wait, PENDING, for a worker.
    handles = [
        client.start("checkout", f"order-{n}", workflow_id=f"order-{n}") for n in range(WORKFLOWS)
    ]
    assert {h.status().status for h in handles[:3]} == {"PENDING"}

    started: list[Worker] = []
    killed: list[int] = []
    took_over: list[float] = []  # seconds from each worker's start to its first step
    for kill in range(KILLS):
        worker = workers()
        started.append(worker)
        # Kill after this worker wrote 5-14% of the lines a whole run writes: early enough
        # that work is left for the next worker (at most 70% is done after five kills).
        target = int(rng.uniform(0.05, 0.14) * total_lines)

        def progressed(worker: Worker = worker, target: int = target) -> bool:
            worker.assert_alive()
            if not ledger.exists():
                return False
            return ledger.read_text(encoding="utf-8").count(f'"pid": {worker.pid}, ') >= target

        wait_for(progressed, 30, f"{worker.name} to write {target} ledger lines", interval=0.005)
        took_over.append(first_line_delay(ledger, worker))
        time.sleep(rng.uniform(0.0, 0.03))  # land anywhere: in a step, a commit, a claim
        worker.kill()
        killed.append(worker.pid)
        entries = read_ledger(ledger)
        confirmed = {
            e["wf"] for e in entries if e["step"] == "confirm_order" and e["phase"] == "end"
        }
        print(
            f"kill {kill + 1}: pid {worker.pid} after {target}+ of its lines; "
            f"{len(entries)} ledger lines, {len(confirmed)} checkouts confirmed"
        )
        assert len(confirmed) < WORKFLOWS, "no work was left for the next worker"

    final = workers()
    started.append(final)

    def all_succeeded() -> bool:
        final.assert_alive()
        done = client.list_workflows(status="SUCCEEDED", name="checkout", limit=2 * WORKFLOWS)
        return len(done) == WORKFLOWS

    wait_for(all_succeeded, 120, "all checkouts to succeed", interval=0.1)
    took_over.append(first_line_delay(ledger, final))
    # The killed workers' workflows were taken over at once (their processes are gone),
    # not after their leases expired.
    assert max(took_over[1:]) < crash_app.LEASE_SECONDS / 2, took_over

    # A graceful stop: nothing is running any more, so it exits 0 well within the grace.
    final.proc.send_signal(signal.SIGTERM)
    assert final.proc.wait(timeout=crash_app.SHUTDOWN_GRACE + 5) == 0, final.stderr()
    assert "perdure worker stopped" in final.stderr()
    for worker in started:  # one worker at a time: no lease was ever lost, nothing failed
        for bad in (" WARNING ", " ERROR ", "Traceback"):
            assert bad not in worker.stderr(), f"{worker.name}:\n{worker.stderr()}"

    # Every result is right, and recorded once.
    for n, handle in enumerate(handles):
        assert handle.result(timeout=5) == crash_app.expected_checkout(f"order-{n}")
        assert handle.status().status == "SUCCEEDED"
    counts = dict(query(db, "SELECT workflow_id, count(*) FROM perdure_steps GROUP BY workflow_id"))
    assert counts == {f"order-{n}": 4 for n in range(WORKFLOWS)}
    steps = query(db, "SELECT workflow_id, position, name, status, attempts FROM perdure_steps")
    for workflow_id, position, name, status, attempts in steps:
        assert (status, attempts) == ("SUCCEEDED", 1), (workflow_id, position, name)
        assert name == crash_app.CHECKOUT_STEPS[int(position)], (workflow_id, position, name)
    rows = query(db, "SELECT id, status, owner, recoveries FROM perdure_workflows")
    assert len(rows) == WORKFLOWS
    assert all(status == "SUCCEEDED" and owner is None for _, status, owner, _ in rows)
    recoveries = [r for *_, r in rows]
    assert max(recoveries) > 0, "no workflow was recovered"
    assert max(recoveries) <= KILLS

    # Only steps in flight at a kill ran twice.
    entries, fragments = parse_ledger(ledger.read_text(encoding="utf-8"))
    assert len(fragments) <= KILLS, fragments  # only a killed process's last line is cut
    repeated = check_ledger(entries, killed, final.pid)
    duplicates = sum(len(v) for v in repeated.values())
    last = crash_app.CHECKOUT_STEPS[-1]
    in_threads = sum(1 for v in repeated.values() for run in v if not (run[1] == last and run[2]))
    assert in_threads <= KILLS * crash_app.MAX_THREADS  # (the others: see check_ledger)
    returned = sum(ended for v in repeated.values() for *_, ended in v)
    print(
        f"{duplicates} step runs repeated after {KILLS} kills "
        f"({[len(repeated.get(pid, [])) for pid in killed]} per kill; {returned} of them had "
        f"returned but were not checkpointed yet), {len(fragments)} cut ledger lines, "
        f"{sum(1 for r in recoveries if r)} workflows recovered, "
        f"{time.monotonic() - began:.1f}s"
    )


# Alone (when the suite runs on several processes): the kill must land at least 1 s before
# the end of a 3 s backoff, of which the suspension (after 1 s) and a random pause (up to
# 0.8 s) may leave as little as 0.15 s to spare.
@pytest.mark.alone
def test_sigkill_during_retry_backoff_keeps_attempt_count_and_wait(
    tmp_path: Path, workers: Callable[[], Worker], client: Any
) -> None:
    rng = random.Random()
    db = tmp_path / "perdure.db"
    ledger = tmp_path / "ledger.jsonl"
    handle = client.start("flaky_checkout", "order-7", workflow_id="flaky-7")
    step_sql = (
        "SELECT status, attempts, next_attempt_at FROM perdure_steps "
        "WHERE workflow_id = 'flaky-7' AND name = 'flaky_charge'"
    )

    first = workers()

    def retrying() -> bool:
        first.assert_alive()
        assert handle.status().status in ("PENDING", "RUNNING"), handle.status()
        return bool(query(db, step_sql))

    wait_for(retrying, 30, "the first attempt of flaky_charge to fail")
    [(status, attempts, next_attempt_at)] = query(db, step_sql)
    assert (status, attempts) == ("RETRYING", 1)
    # The failed attempt ran, and the next one is due 3 s after it failed.
    charges = [e for e in read_ledger(ledger) if e["step"] == "flaky_charge"]
    assert [(e["phase"], e["pid"]) for e in charges] == [("start", first.pid), ("end", first.pid)]
    assert next_attempt_at == pytest.approx(charges[1]["t"] + 3.0, abs=0.5)

    # The 3 s backoff is longer than suspend_after: the workflow is suspended until the
    # next attempt is due, and the worker holds nothing for it.
    workflow_sql = "SELECT owner, wake_at, wait_topic FROM perdure_workflows WHERE id = 'flaky-7'"
    wait_for(
        lambda: query(db, workflow_sql)[0][0] is None, 10, "the workflow to suspend for the backoff"
    )
    assert query(db, workflow_sql) == [(None, next_attempt_at, "perdure.retry:flaky_charge")]

    # Kill the worker somewhere inside the backoff.
    time.sleep(rng.uniform(0.05, 0.8))
    assert time.time() < next_attempt_at - 1.0, "the test was too slow to kill inside the backoff"
    first.kill()
    assert query(db, step_sql) == [("RETRYING", 1, next_attempt_at)]

    second = workers()
    # The new worker takes the workflow when the next attempt is due (not before: the
    # ledger's times below), and runs attempt 2, not attempt 1 again.
    epoch_before = query(db, "SELECT epoch FROM perdure_workflows WHERE id = 'flaky-7'")[0][0]

    def taken_over() -> bool:
        second.assert_alive()
        rows = query(db, "SELECT epoch FROM perdure_workflows WHERE id = 'flaky-7'")
        return bool(rows[0][0] > epoch_before)

    wait_for(taken_over, 10, "the second worker to take the workflow over")

    assert handle.result(timeout=30) == {"order_id": "order-7", "charge": "charged-order-7"}
    charges = [e for e in read_ledger(ledger) if e["step"] == "flaky_charge"]
    assert [(e["phase"], e["pid"]) for e in charges] == [
        ("start", first.pid),
        ("end", first.pid),
        ("start", second.pid),
        ("end", second.pid),
    ]
    # The clock that sleeps is monotonic and time.time() may be slewed against it (NTP),
    # by well under 10 ms over 3 s; an attempt that skipped the wait would be seconds early.
    assert charges[2]["t"] >= next_attempt_at - 0.01
    assert query(db, step_sql) == [("SUCCEEDED", 2, None)]
    status = handle.status()
    assert status.status == "SUCCEEDED"
    assert [(s.name, s.status, s.attempts) for s in status.steps] == [
        ("order_intake", "SUCCEEDED", 1),
        ("flaky_charge", "SUCCEEDED", 2),
    ]
    # Suspended when its worker died, it was woken, not recovered.
    assert status.recoveries == 0
    intakes = [e for e in read_ledger(ledger) if e["step"] == "order_intake"]
    assert [e["phase"] for e in intakes] == ["start", "end"], "a recorded step ran again"

    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(timeout=crash_app.SHUTDOWN_GRACE + 5) == 0, second.stderr()


def test_waiting_workflows_survive_sigkill_and_wake_on_time(
    tmp_path: Path, workers: Callable[[], Worker], client: Any
) -> None:
    """Workflows sleeping and waiting on recv are suspended in the store; their worker is
    killed; their events keep their value; messages are sent while no worker runs; a new
    worker delivers each message exactly once and fires every timer within a second of its
    deadline."""
    db = tmp_path / "perdure.db"
    ledger = tmp_path / "ledger.jsonl"
    worker = workers()
    deadline = time.time() + 12
    timers = [
        client.start("timer", deadline + i * 0.25, workflow_id=f"timer-{i}") for i in range(10)
    ]
    inboxes = [client.start("inbox", workflow_id=f"inbox-{i}") for i in range(10)]

    def all_suspended() -> bool:
        worker.assert_alive()
        rows = query(
            db,
            "SELECT count(*) FROM perdure_workflows WHERE owner IS NULL AND wake_at IS NOT NULL",
        )
        return rows[0][0] == 20

    wait_for(all_suspended, timeout=10, what="every workflow to be suspended")
    worker.kill()
    # Events keep their value with no worker running.
    assert [client.get_event(f"inbox-{i}", "stage") for i in range(10)] == ["waiting for go"] * 10
    # Nobody runs: the messages wait in the store (a repeated send is a no-op).
    for i in range(10):
        for _ in range(2):
            client.send(f"inbox-{i}", {"n": i}, topic="go", idempotency_key=f"go-{i}")
    assert time.time() < deadline - 3, "the machine is too slow for this test's timing"
    workers()
    for i, handle in enumerate(inboxes):
        assert handle.result(timeout=30) == {"n": i}
    for i, handle in enumerate(timers):
        fired_at = handle.result(timeout=30)
        late = fired_at - (deadline + i * 0.25)
        assert 0 <= late < 1.0, f"timer-{i} fired {late:.2f}s after its deadline"
    starts = [e["wf"] for e in read_ledger(ledger) if e["phase"] == "start"]
    assert sorted(starts) == sorted(
        [f"timer-{i}" for i in range(10)] + [f"inbox-{i}" for i in range(10)]
    )

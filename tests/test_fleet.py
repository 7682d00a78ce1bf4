"""Fleet tests on PostgreSQL: several ``perdure worker`` processes share one database.

The app under test is ``tests/fleet_app.py``. As in ``test_crash.py``, its steps write a
ledger (a line when a step starts and when it ends, with the PID), and this module adds
its own lines (a kill, a pause, a resume, a server restart) to the same file, so that
one file orders everything that happened. Each step also returns its PID inside its
recorded output, which tells which process recorded it.

Each test runs on a fresh schema of the server of ``conftest.postgres_server`` (skipped
without one, unless ``PERDURE_REQUIRE_POSTGRES=1``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fleet_app
import pytest
from conftest import admin_connection, schema_of
from ledger import parse_ledger, read_ledger, wait_for

import perdure

pytestmark = pytest.mark.postgres

TESTS_DIR = Path(__file__).resolve().parent
STEPS = fleet_app.CHECKOUT_STEPS
#: The PostgreSQL cluster that test_postgres_restarts_lose_nothing restarts.
PG_CLUSTER = os.environ.get("PERDURE_TEST_PG_CLUSTER", "15 main").split()


# -- the ledger ------------------------------------------------------------------------------


def mark(ledger: Path, event: str, **fields: Any) -> dict[str, Any]:
    """Append one of the test's own lines (``{"event": ...}``) to the ledger."""
    entry = {"t": time.time(), "event": event, **fields}
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)
    return entry


def in_time_order(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries ordered by their time, re-indexed (``i``) in that order.

    A process takes the time of a line just before it writes it, and a SIGSTOP can land
    in between: the line of a step that started before the pause is then written after
    it (after our "stop" line). Time orders events as they happened (one host, one
    clock); the order of writing does not, for a paused process."""
    ordered = sorted(entries, key=lambda e: (e["t"], e["i"]))
    for i, entry in enumerate(ordered):
        entry["i"] = i
    return ordered


def in_flight(path: Path, pid: int) -> int:
    """How many steps ``pid`` has started and not ended, by the ledger (cheap: counts)."""
    if not path.exists():
        return 0
    text = path.read_text(encoding="utf-8")
    return text.count(f'"pid": {pid}, "phase": "start"') - text.count(
        f'"pid": {pid}, "phase": "end"'
    )


class Run:
    """One run of one step in one process, from the ledger: its start and end lines."""

    def __init__(self, start: dict[str, Any]) -> None:
        self.start = start
        self.end: dict[str, Any] | None = None
        self.wf: str = start["wf"]
        self.step: str = start["step"]
        self.pid: int = start["pid"]

    def __repr__(self) -> str:
        end = self.end["i"] if self.end else None
        return f"<{self.wf} {self.step} pid {self.pid} lines {self.start['i']}-{end}>"


def step_runs(entries: list[dict[str, Any]]) -> dict[tuple[str, str], list[Run]]:
    """Every run of every step, per (workflow, step), in the order they started."""
    runs: dict[tuple[str, str], list[Run]] = defaultdict(list)
    open_runs: dict[tuple[str, str, int], Run] = {}
    for e in entries:
        if "event" in e:
            continue
        key = (e["wf"], e["step"], e["pid"])
        if e["phase"] == "start":
            assert key not in open_runs, f"{key} started twice in one process without ending"
            run = Run(e)
            open_runs[key] = run
            runs[e["wf"], e["step"]].append(run)
        else:
            assert e["phase"] == "end", e
            run = open_runs.pop(key, None)
            assert run is not None, f"an end without a start: {e}"
            run.end = e
    return runs


def check_checkout_ledger(
    entries: list[dict[str, Any]],
    workflows: list[str],
    recorded_pids: dict[tuple[str, str], int],
    may_repeat: Callable[[Run, Run], str | None],
) -> list[tuple[Run, str]]:
    """The checks every checkout ledger must pass; returns the runs that did not count
    (every run of a step but its last), each with the reason it was allowed.

    * every step of every workflow ran, the last run ended, and its PID is the one in
      the recorded output: the run that counted is the last one, nothing recorded a
      step after another process ran it again;
    * a step starts only after the previous step's counted run ended;
    * every earlier run is explained by ``may_repeat(earlier, last)``, which returns
      why it was allowed to run again, or None.
    """
    runs = step_runs(entries)
    unknown = {wf for wf, _ in runs} - set(workflows)
    assert not unknown, f"steps ran for unknown workflows: {sorted(unknown)[:5]}"
    repeated: list[tuple[Run, str]] = []
    for workflow in workflows:
        previous_end = -1
        for step in STEPS:
            started = runs.get((workflow, step), [])
            assert started, f"{workflow} {step} never started"
            last = started[-1]
            assert last.end is not None, f"{workflow} {step}: the run that counted never ended"
            assert recorded_pids[workflow, step] == last.pid, (
                f"{workflow} {step} was recorded by pid {recorded_pids[workflow, step]}, "
                f"but its last run was in pid {last.pid}: {started}"
            )
            assert all(run.start["i"] > previous_end for run in started), (
                f"{workflow} {step} started before the previous step ended: {started}"
            )
            previous_end = last.end["i"]
            for earlier in started[:-1]:
                reason = may_repeat(earlier, last)
                assert reason is not None, (
                    f"{workflow} {step} ran more than once without a reason: {started}"
                )
                repeated.append((earlier, reason))
    return repeated


# -- processes and the database ----------------------------------------------------------------


def thread_states(pid: int) -> list[str]:
    """The scheduler state of every thread of a process (R, S, T, ...)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
    return states


class Worker:
    """One ``perdure worker fleet_app:app`` subprocess; its output goes to files."""

    def __init__(self, tmp_path: Path, env: dict[str, str], name: str) -> None:
        self.name = name
        self.stdout_path = tmp_path / f"{name}.out"
        self.stderr_path = tmp_path / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "perdure", "worker", "fleet_app:app"],
                cwd=TESTS_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self.pid = self.proc.pid

    def __repr__(self) -> str:
        return f"<{self.name} pid {self.pid}>"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"{self.name} exited with {code}:\n{self.stderr()}")

    def kill(self) -> None:
        """SIGKILL, and reap it (a zombie counts as dead, but must not linger)."""
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL, self.stderr()

    def pause(self) -> None:
        """SIGSTOP, and wait until every thread of the process is stopped."""
        self.proc.send_signal(signal.SIGSTOP)
        wait_for(
            lambda: set(thread_states(self.pid)) <= {"T", "t"},
            5,
            f"{self.name} to stop",
            interval=0.001,
        )

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def terminate(self, timeout: float) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds it took to exit."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - began

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Fleet:
    """The test's database (a fresh schema), ledger, client app and workers."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.schema = schema_of(url)
        self.ledger = tmp_path / "ledger.jsonl"
        self.workers: list[Worker] = []
        self.clients: list[perdure.App] = []

    def client(self, **settings: Any) -> perdure.App:
        """An app on the test's schema that is never launched: it starts and reads."""
        app = fleet_app.build_app(self.url, **settings)
        self.clients.append(app)
        _ = app.store  # create the schema now, before any worker looks at it
        return app

    def start(self, **settings: str) -> Worker:
        """Start a worker; ``settings`` set its ``FLEET_*`` variables (lower-case names)."""
        env = dict(os.environ)
        env["PERDURE_DATABASE_URL"] = self.url
        env["PERDURE_LEDGER"] = str(self.ledger)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        for key, value in settings.items():
            env[f"FLEET_{key.upper()}"] = value
        worker = Worker(self.tmp_path, env, f"worker-{len(self.workers) + 1}")
        self.workers.append(worker)
        return worker

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with admin_connection(self.url, self.schema) as conn:
            return conn.execute(sql, params).fetchall()

    def executor_of(self, worker: Worker) -> str | None:
        rows = self.query("SELECT id FROM perdure_executors WHERE pid = %s", (worker.pid,))
        return rows[0][0] if rows else None

    def wait_registered(self, *workers: Worker, timeout: float = 30) -> None:
        def registered() -> bool:
            for worker in workers:
                worker.assert_alive()
            return all(self.executor_of(worker) for worker in workers)

        wait_for(registered, timeout, f"{workers} to register their executors", interval=0.05)

    def succeeded(self) -> int:
        rows = self.query("SELECT count(*) FROM perdure_workflows WHERE status = 'SUCCEEDED'")
        return int(rows[0][0])

    def diagnose(self) -> str:
        """The unfinished workflows, the executors and the tail of every worker's log."""
        lines = ["unfinished workflows (id, status, owner, epoch, lease, recoveries, steps):"]
        with contextlib.suppress(Exception):
            for row in self.query(
                "SELECT w.id, w.status, w.owner, w.epoch, w.lease_expires_at, w.recoveries, "
                "(SELECT count(*) FROM perdure_steps s WHERE s.workflow_id = w.id) "
                "FROM perdure_workflows w WHERE status <> 'SUCCEEDED' ORDER BY created_at LIMIT 40"
            ):
                lines.append(f"  {row}")
            lines.append(f"now: {time.time()}; executors:")
            for row in self.query("SELECT * FROM perdure_executors"):
                lines.append(f"  {row}")
            lines.append("server sessions not idle (pid, application, state, since, query):")
            for row in self.query(
                "SELECT pid, application_name, state, xact_start, left(query, 100) "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND state <> 'idle' AND pid <> pg_backend_pid()"
            ):
                lines.append(f"  {row}")
        for worker in self.workers:
            tail = worker.stderr().splitlines()[-40:]
            lines.append(f"--- {worker} (exit {worker.proc.poll()}) stderr tail:")
            lines.extend(tail)
        return "\n".join(lines)

    def recorded(self, workflows: list[str]) -> dict[tuple[str, str], int]:
        """Check every workflow's outcome and steps; return the PID recorded with each step.

        Each checkout SUCCEEDED with the right result and no owner, and has exactly its
        four step rows (one per position, each SUCCEEDED at the first attempt)."""
        rows = self.query("SELECT id, name, status, output, owner FROM perdure_workflows")
        assert len(rows) == len(workflows), f"{len(rows)} workflows stored"
        for workflow_id, name, status, output, owner in rows:
            assert (name, status, owner) == ("checkout", "SUCCEEDED", None), workflow_id
            assert json.loads(output) == fleet_app.expected_checkout(workflow_id), workflow_id
        steps = self.query(
            "SELECT workflow_id, position, name, status, attempts, output FROM perdure_steps"
        )
        counts: dict[str, int] = defaultdict(int)
        pids: dict[tuple[str, str], int] = {}
        for workflow_id, position, name, status, attempts, output in steps:
            counts[workflow_id] += 1
            assert name == STEPS[int(position)], (workflow_id, position, name)
            assert (status, attempts) == ("SUCCEEDED", 1), (workflow_id, position, status)
            pids[workflow_id, name] = json.loads(output)["pid"]
        assert counts == dict.fromkeys(workflows, 4), "not exactly 4 step rows per workflow"
        return pids


@pytest.fixture
def fleet(tmp_path: Path, postgres_url: str) -> Iterator[Fleet]:
    """A ``Fleet``; at the end its workers are killed and its clients shut down (before
    ``postgres_url`` drops the schema)."""
    fleet = Fleet(tmp_path, postgres_url)
    yield fleet
    for worker in fleet.workers:
        worker.close()
    for client in fleet.clients:
        client.shutdown(grace=0.5)


def bad_log_lines(worker: Worker) -> list[str]:
    return [
        line
        for line in worker.stderr().splitlines()
        if " ERROR " in line or " CRITICAL " in line or "Traceback" in line
    ]


# -- PostgreSQL restarts ---------------------------------------------------------------------


def pg_ctl(action: str, *options: str) -> None:
    """``pg_ctlcluster <version> <cluster> <action>`` (without systemd's redirect)."""
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, action, *options]
    # A start after an immediate stop first syncs the data directory, then replays the WAL
    # since the last checkpoint: 80 s once on a loaded machine (see the restart test).
    subprocess.run(command, check=True, capture_output=True, timeout=180)


def restart_refused(url: str) -> str | None:
    """Why this test may not restart the server named by ``url`` (None if it may): it
    restarts the local cluster ``PERDURE_TEST_PG_CLUSTER`` (default "15 main") with
    pg_ctlcluster, and only if that cluster is the server the URL reaches."""
    try:
        listing = subprocess.run(
            ["pg_lsclusters", "--no-header"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"cannot list the local PostgreSQL clusters ({exc})"
    folders = [line.split()[5] for line in listing.splitlines() if line.split()[:2] == PG_CLUSTER]
    if not folders:
        return f"no local cluster {' '.join(PG_CLUSTER)} (set PERDURE_TEST_PG_CLUSTER)"
    try:
        with admin_connection(url) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
    except Exception as exc:  # not allowed to read it: not our own server, most likely
        return f"cannot read the server's data_directory ({exc})"
    if row is None or row[0] != folders[0]:
        return f"{url} is not the local cluster {' '.join(PG_CLUSTER)} ({folders[0]})"
    if os.geteuid() != 0:
        return "restarting the cluster needs root"
    return None


def server_answers(url: str) -> bool:
    try:
        with admin_connection(url) as conn:
            conn.execute("SELECT 1")
    except Exception:
        return False
    return True


def ensure_server_up(url: str, timeout: float = 60) -> None:
    """Start the cluster if it is down and wait until it accepts connections."""
    if server_answers(url):
        return
    with contextlib.suppress(Exception):
        pg_ctl("start")
    wait_for(lambda: server_answers(url), timeout, "PostgreSQL to accept connections", interval=0.1)


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.slow
def test_three_workers_share_500_checkouts_through_kill_and_pause(fleet: Fleet) -> None:
    """Three workers share 500 checkouts; A is killed (SIGKILL) mid-step, B is paused
    (SIGSTOP) mid-step past its 3 s lease and resumed once its workflows were taken over
    and finished elsewhere. Every checkout completes once with the right result, and the
    ledger shows (a) only steps in flight at the kill or the pause ran twice, (b) no two
    processes ever ran steps of one workflow at the same time (B counted as not running
    while stopped), (c) after resuming, B started nothing and recorded nothing for the
    workflows taken from it, which were taken only after their leases expired. The live
    workers then drain on SIGTERM and exit 0 at once."""
    total = 500
    lease = 3.0
    settings = {"lease_seconds": str(lease), "max_threads": "4", "max_workflows": "32"}
    workflows = [f"order-{n}" for n in range(total)]
    lines = total * len(STEPS) * 2
    client = fleet.client()
    a, b, c = (fleet.start(**settings) for _ in range(3))
    fleet.wait_registered(a, b, c)
    b_executor = fleet.executor_of(b)

    began = time.monotonic()
    handles = [client.start("checkout", wf, workflow_id=wf) for wf in workflows]
    print(f"started {total} checkouts in {time.monotonic() - began:.2f}s")

    def progress(fraction: float, worker: Worker) -> Callable[[], bool]:
        def ready() -> bool:
            for w in (a, b, c):
                if w.proc.returncode is None:
                    w.assert_alive()
            text = fleet.ledger.read_text(encoding="utf-8") if fleet.ledger.exists() else ""
            return text.count("\n") >= fraction * lines and in_flight(fleet.ledger, worker.pid) > 0

        return ready

    # Kill A while it runs steps, once a tenth of the work is done.
    wait_for(progress(0.10, a), 30, "10% of the steps, with A in a step", interval=0.002)
    a.kill()
    mark(fleet.ledger, "kill", pid=a.pid)
    print(f"killed A (pid {a.pid}) at {time.monotonic() - began:.2f}s")

    # Pause B mid-step for longer than its lease, once a fifth of the work is done. (B may
    # have ended its step by the time the signal lands: then let it go on, and try again.)
    for _ in range(50):
        wait_for(progress(0.20, b), 30, "20% of the steps, with B in a step", interval=0.002)
        b.pause()
        if in_flight(fleet.ledger, b.pid) > 0:
            break
        b.resume()
    mark(fleet.ledger, "stop", pid=b.pid)
    paused_at = time.monotonic()
    # B's workflows, each with the expiry of B's lease: its executor row's, which its
    # workflows' rows stand for (B renews nothing while stopped).
    held = {
        wf: (epoch, expiry)
        for wf, epoch, expiry in fleet.query(
            "SELECT w.id, w.epoch, e.lease_expires_at FROM perdure_workflows w "
            "JOIN perdure_executors e ON e.id = w.owner WHERE w.owner = %s "
            "AND w.status IN ('PENDING', 'RUNNING')",
            (b_executor,),
        )
    }
    b_in_flight = in_flight(fleet.ledger, b.pid)
    print(
        f"paused B (pid {b.pid}) at {time.monotonic() - began:.2f}s: it holds {len(held)} "
        f"workflows, {b_in_flight} steps in flight; its leases expire in "
        f"{min(e for _, e in held.values()) - time.time():.2f}s or later"
    )
    assert held and b_in_flight > 0

    def held_rows() -> list[tuple[Any, ...]]:
        return fleet.query(
            "SELECT id, status, owner, epoch FROM perdure_workflows WHERE id = ANY(%s)",
            (list(held),),
        )

    try:
        # The others take B's workflows over when its lease expires, and finish them
        # (so that B's step still in flight, when it resumes, runs alongside nothing).
        wait_for(
            lambda: all(owner != b_executor for _, _, owner, _ in held_rows()),
            lease + 15,
            "B's workflows to be taken over",
            interval=0.02,
        )
        took_over = time.monotonic() - paused_at
        wait_for(
            lambda: all(status == "SUCCEEDED" for _, status, _, _ in held_rows()),
            30,
            "B's workflows to complete elsewhere",
            interval=0.02,
        )
        time.sleep(max(0.0, 5.0 - (time.monotonic() - paused_at)))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{fleet.diagnose()}") from None
    finally:
        mark(fleet.ledger, "cont", pid=b.pid)
        b.resume()
    taken = {wf for wf, _, _, epoch in held_rows() if epoch > held[wf][0]}
    print(
        f"B's {len(held)} workflows taken over {took_over:.2f}s into the pause ({len(taken)} "
        f"with a new epoch); resumed B after {time.monotonic() - paused_at:.2f}s"
    )
    assert taken, "none of B's workflows was taken over"

    def all_succeeded() -> bool:
        for worker in (b, c):
            worker.assert_alive()
        return fleet.succeeded() == total

    try:
        wait_for(all_succeeded, 45, "all checkouts to succeed", interval=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{fleet.diagnose()}") from None
    elapsed = time.monotonic() - began

    # A graceful stop of the live workers: nothing runs, they exit 0 at once.
    for worker in (b, c):
        code, took = worker.terminate(timeout=15)
        assert code == 0, worker.stderr()
        assert took < 3.0, f"{worker} took {took:.1f}s to drain an idle executor"
        assert "perdure worker stopped" in worker.stderr()
    for worker in (a, b, c):
        assert not bad_log_lines(worker), f"{worker}:\n{worker.stderr()}"

    for wf, handle in zip(workflows, handles, strict=True):
        assert handle.result(timeout=5) == fleet_app.expected_checkout(wf)
    recorded = fleet.recorded(workflows)

    entries, fragments = parse_ledger(fleet.ledger.read_text(encoding="utf-8"))
    assert len(fragments) <= 1, fragments  # only the killed worker's last line may be cut
    entries = in_time_order(entries)
    assert {e["pid"] for e in entries if "event" not in e} <= {a.pid, b.pid, c.pid}
    kill_i, stop_i, cont_i = (
        next(e["i"] for e in entries if e.get("event") == name) for name in ("kill", "stop", "cont")
    )
    assert not [e for e in entries if e["pid"] == a.pid and e["i"] > kill_i], "A ran after kill"
    assert not [e for e in entries if e["pid"] == b.pid and stop_i < e["i"] < cont_i], (
        "B wrote while it was stopped"
    )
    last_start: dict[tuple[int, str], int] = {}
    for e in entries:
        if e.get("phase") == "start":
            last_start[e["pid"], e["wf"]] = e["i"]

    # (c) (checked first: the checks after it would also catch a violation, less clearly)
    # After B resumed, it started nothing for the workflows taken from it: at most the
    # end of the step it was running, and that was not recorded. The others took them
    # over only once B's lease had expired.
    for e in entries:
        if e["i"] > cont_i and e.get("wf") in held and e["pid"] == b.pid:
            assert e["phase"] == "end" and last_start[b.pid, e["wf"]] < stop_i, (
                f"B started a step of {e['wf']} {e['t'] - entries[cont_i]['t']:.3f}s after it "
                f"resumed, although the workflow was taken from it while it was stopped "
                f"(see test_resumed_worker_starts_no_step_of_a_workflow_taken_from_it): {e}"
            )
        if e["i"] > stop_i and e.get("wf") in taken and e.get("phase") == "start":
            expiry = held[e["wf"]][1]
            assert e["t"] > expiry, f"{e['wf']} was taken over before B's lease expired: {e}"
    for (wf, _step), pid in recorded.items():
        if wf in held and pid == b.pid:
            [run] = [r for r in step_runs(entries)[wf, _step] if r.pid == b.pid]
            assert run.end is not None and run.end["i"] < stop_i, f"B recorded {run} late"

    def in_flight_at_kill_or_pause(earlier: Run, last: Run) -> str | None:
        # (a) A step ran again only if its earlier run was in flight in A when A was
        # killed, or in B when B was paused: that process's last step of the workflow.
        index = earlier.start["i"]
        if earlier.pid == a.pid and last_start[a.pid, earlier.wf] == index < kill_i:
            return "in flight at the kill"
        if earlier.pid == b.pid and last_start[b.pid, earlier.wf] == index < stop_i:
            return "in flight at the pause"
        return None

    repeated = check_checkout_ledger(entries, workflows, recorded, in_flight_at_kill_or_pause)

    # (b) No two processes ran steps of one workflow at the same time, counting B as not
    # running while it was stopped.
    def spans(run: Run) -> list[tuple[int, int]]:
        end = run.end["i"] if run.end else (kill_i if run.pid == a.pid else len(entries))
        if run.pid == b.pid and run.start["i"] < stop_i < end:
            return [(run.start["i"], stop_i), (cont_i, end)]
        return [(run.start["i"], end)]

    by_workflow: dict[str, list[Run]] = defaultdict(list)
    for runs in step_runs(entries).values():
        for run in runs:
            by_workflow[run.wf].append(run)
    for wf, runs in by_workflow.items():
        for i, first in enumerate(runs):
            for second in runs[i + 1 :]:
                if first.pid == second.pid:
                    continue
                for s1, e1 in spans(first):
                    for s2, e2 in spans(second):
                        assert e1 < s2 or e2 < s1, f"{wf}: {first} overlaps {second}"

    per_cause = Counter(reason for _, reason in repeated)

    # At most one per thread (4 each): running, or its record being written before the
    # workflow's next step; but for a workflow's last step that had returned, whose record
    # goes with the outcome the thread does not wait for (guarantee 2, as in test_crash).
    def returned_last_step(run: Run) -> bool:
        event_i = kill_i if run.pid == a.pid else stop_i
        return run.step == STEPS[-1] and run.end is not None and run.end["i"] < event_i

    in_threads = Counter(reason for run, reason in repeated if not returned_last_step(run))
    assert all(count <= 4 for count in in_threads.values()), (in_threads, repeated)
    warnings = sum(" WARNING " in line for line in b.stderr().splitlines())
    print(
        f"{total} checkouts done in {elapsed:.2f}s on 3 workers (lease {lease:.0f}s): "
        f"{dict(per_cause)} step runs repeated ({dict(in_threads)} in threads); B logged "
        f"{warnings} warnings after it resumed"
    )


@pytest.mark.slow
# Alone (when the suite runs on several processes): no other test may use the server while
# it is down.
@pytest.mark.alone
def test_postgres_restarts_lose_nothing(fleet: Fleet, postgres_server: str) -> None:
    """Two workers run 1,000 checkouts while the server is restarted three times
    (immediate stop, 1.5 s down, start). The workers recover alone; every checkout
    completes once with the right result, its four steps recorded once each, and only
    steps under way while the server went down ran again."""
    refused = restart_refused(postgres_server)
    if refused:
        pytest.skip(f"this test restarts PostgreSQL, but {refused}")
    # A checkpoint first: each restart's recovery then replays this test's WAL, not all
    # that the suite wrote since the server's last checkpoint (up to 5 minutes of it).
    with admin_connection(postgres_server) as conn:
        conn.execute("CHECKPOINT")
    total = 1000
    restarts = 3
    workflows = [f"order-{n}" for n in range(total)]
    lines = total * len(STEPS) * 2
    settings = {"lease_seconds": "3", "max_threads": "4", "max_workflows": "32"}
    client = fleet.client()
    workers = [fleet.start(**settings) for _ in range(2)]
    fleet.wait_registered(*workers)

    began = time.monotonic()
    for wf in workflows:
        client.start("checkout", wf, workflow_id=wf)
    client.shutdown()  # its listener would only complain about the restarts
    print(f"started {total} checkouts in {time.monotonic() - began:.2f}s")

    def ledger_lines() -> int:
        for worker in workers:
            worker.assert_alive()
        return fleet.ledger.read_text(encoding="utf-8").count("\n") if fleet.ledger.exists() else 0

    windows: list[tuple[float, float]] = []
    done_lines = 0
    try:
        for restart in range(restarts):
            # Restart once a further eighth of the work is done since the server came back
            # (nothing is done while it is down, so some work is always left).
            target = done_lines + lines / 8
            wait_for(lambda t=target: ledger_lines() >= t, 60, f"{target:.0f} ledger lines")
            down = mark(fleet.ledger, "down")["t"]
            pg_ctl("stop", "-m", "immediate")
            time.sleep(1.5)
            pg_ctl("start")
            wait_for(lambda: server_answers(postgres_server), 30, "PostgreSQL", interval=0.05)
            up = mark(fleet.ledger, "up")["t"]
            windows.append((down, up))
            done_lines = ledger_lines()
            print(
                f"restart {restart + 1} at {time.monotonic() - began - (time.time() - down):.2f}s"
                f" ({done_lines} ledger lines): down for {up - down:.2f}s"
            )
    finally:
        ensure_server_up(postgres_server)

    def all_succeeded() -> bool:
        for worker in workers:
            worker.assert_alive()
        return fleet.succeeded() == total

    try:
        wait_for(all_succeeded, 60, "all checkouts to succeed", interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{fleet.diagnose()}") from None
    elapsed = time.monotonic() - began
    for worker in workers:
        code, took = worker.terminate(timeout=15)
        assert code == 0, worker.stderr()
        assert not bad_log_lines(worker), f"{worker}:\n{worker.stderr()}"

    recorded = fleet.recorded(workflows)
    entries, fragments = parse_ledger(fleet.ledger.read_text(encoding="utf-8"))
    assert not fragments
    entries = in_time_order(entries)

    def in_flight_at_a_restart(earlier: Run, last: Run) -> str | None:
        # A step ran again only if its earlier run was under way while the server went
        # down: it started before the server was back (a little after: the probe that
        # tells may lag) and ended after it went down (its record then failed).
        assert earlier.end is not None, f"{earlier} never ended, although nothing was killed"
        for n, (down, up) in enumerate(windows):
            if earlier.start["t"] <= up + 0.5 and earlier.end["t"] >= down - 0.5:
                return f"in flight at restart {n + 1}"
        return None

    repeated = check_checkout_ledger(entries, workflows, recorded, in_flight_at_a_restart)
    per_restart = Counter(reason for _, reason in repeated)
    late = max(
        (run.start["t"] - windows[int(reason[-1]) - 1][1] for run, reason in repeated), default=None
    )
    recoveries = fleet.query("SELECT sum(recoveries), max(epoch) FROM perdure_workflows")
    warnings = [sum(" WARNING " in line for line in w.stderr().splitlines()) for w in workers]
    print(
        f"{total} checkouts done in {elapsed:.2f}s through {restarts} restarts "
        f"(down {[round(up - down, 2) for down, up in windows]}s): step runs repeated "
        f"{dict(per_restart)} (the latest started {late}s after the server was back), "
        f"recoveries/max epoch {recoveries[0]}, worker warnings {warnings}"
    )


def test_sigterm_releases_for_immediate_takeover_on_postgres(fleet: Fleet) -> None:
    """SIGTERM with a 0.2 s grace: worker A releases its long checkouts, and worker B,
    already running, takes them over at once (the 60 s lease would not have expired)."""
    count = 4
    hold = 0.5
    lease = 60.0
    workflows = [f"order-{n}" for n in range(count)]
    settings = {"lease_seconds": str(lease), "max_threads": "8", "shutdown_grace": "0.2"}
    client = fleet.client()
    a = fleet.start(**settings)
    fleet.wait_registered(a)
    a_executor = fleet.executor_of(a)
    handles = [client.start("checkout", wf, hold, workflow_id=wf) for wf in workflows]

    def a_runs_them_all() -> bool:
        a.assert_alive()
        starts = [e for e in read_ledger(fleet.ledger) if e["phase"] == "start"]
        return {e["wf"] for e in starts} == set(workflows)

    wait_for(a_runs_them_all, 10, "A to run every workflow")
    b = fleet.start(**settings)  # already running when A stops, with nothing to do
    fleet.wait_registered(b)
    b_executor = fleet.executor_of(b)
    owners = fleet.query("SELECT DISTINCT owner FROM perdure_workflows")
    assert owners == [(a_executor,)], owners

    wait_for(lambda: in_flight(fleet.ledger, a.pid) == count, 5, "A's steps to be under way")
    stopping = time.monotonic()
    code, drained = a.terminate(timeout=10)
    assert code == 0, a.stderr()
    assert "released for other executors" in a.stderr(), a.stderr()

    def b_owns_them() -> bool:
        rows = fleet.query("SELECT owner, status FROM perdure_workflows")
        return all(owner == b_executor or status == "SUCCEEDED" for owner, status in rows)

    wait_for(b_owns_them, 10, "B to take the workflows over")
    took_over = time.monotonic() - stopping
    for wf, handle in zip(workflows, handles, strict=True):
        assert handle.result(timeout=30) == fleet_app.expected_checkout(wf)
    elapsed = time.monotonic() - stopping
    code, _ = b.terminate(timeout=10)
    assert code == 0, b.stderr()
    print(
        f"A exited 0 {drained:.2f}s after SIGTERM; B owned its {count} workflows "
        f"{took_over:.2f}s after it (lease {lease:.0f}s); all done {elapsed:.2f}s after it"
    )
    # Well before the lease would have expired: the released leases were taken at once.
    assert took_over < 5.0

    recorded = fleet.recorded(workflows)
    entries = in_time_order(parse_ledger(fleet.ledger.read_text(encoding="utf-8"))[0])
    last_start = {(e["pid"], e["wf"]): e["i"] for e in entries if e.get("phase") == "start"}
    # A's workflows went on during the grace period; then A released them, and started
    # nothing after that (its log says when, to the millisecond).
    [released] = [line for line in a.stderr().splitlines() if "released for other" in line]
    released_at = time.mktime(time.strptime(released[:19], "%Y-%m-%d %H:%M:%S"))
    released_at += int(released[20:23]) / 1000 + 0.001
    a_starts = [e for e in entries if e.get("phase") == "start" and e["pid"] == a.pid]
    assert all(e["t"] < released_at for e in a_starts), (released, a_starts[-1])

    def in_flight_at_release(earlier: Run, last: Run) -> str | None:
        if earlier.pid == a.pid and last_start[a.pid, earlier.wf] == earlier.start["i"]:
            return "in flight when A released it"
        return None

    repeated = check_checkout_ledger(entries, workflows, recorded, in_flight_at_release)
    assert len(repeated) <= count
    recoveries = fleet.query("SELECT recoveries, owner FROM perdure_workflows")
    assert recoveries == [(1, None)] * count, recoveries
    assert not bad_log_lines(a) and not bad_log_lines(b)


# Alone (when the suite runs on several processes): it bounds how late result() and the
# worker wake up, which a busy test beside it on the same cores would make later.
@pytest.mark.alone
def test_result_wakes_within_milliseconds_across_processes(fleet: Fleet) -> None:
    """result() in this process returns within milliseconds of a completion in a worker
    process, although the client polls only every 5 s: LISTEN/NOTIFY wakes it (and the
    start's event wakes the worker)."""
    rounds = 5
    hold = 0.3
    client = fleet.client(poll_interval=5.0)
    assert client.wait_interval >= 5.0  # without pushed events, result() would poll this
    worker = fleet.start()
    fleet.wait_registered(worker)

    latencies = []
    pickups = []
    for n in range(rounds):
        wf = f"ping-{n}"
        handle = client.start("ping", n, hold, workflow_id=wf)
        started = time.time()
        assert handle.result(timeout=10) == n
        returned = time.time()
        [(finished_at,)] = fleet.query(
            "SELECT finished_at FROM perdure_workflows WHERE id = %s", (wf,)
        )
        [step_start] = [
            e["t"] for e in read_ledger(fleet.ledger) if e["wf"] == wf and e["phase"] == "start"
        ]
        # result() was waiting when the workflow finished, and woke on the pushed event.
        assert started < finished_at < returned
        latencies.append(returned - finished_at)
        pickups.append(step_start - started)
    print(
        "result() returned "
        + ", ".join(f"{1000 * x:.1f}" for x in latencies)
        + " ms after completion; the worker started the step "
        + ", ".join(f"{1000 * x:.1f}" for x in pickups)
        + " ms after the start (client poll interval 5s)"
    )
    assert max(latencies) < 0.5, latencies
    # The worker was woken by the start's event too, not by its claim tick (1 s here).
    assert max(pickups) < 0.5, pickups
    code, _ = worker.terminate(timeout=10)
    assert code == 0, worker.stderr()


@pytest.mark.slow
def test_resumed_worker_starts_no_step_of_a_workflow_taken_from_it(fleet: Fleet) -> None:
    """A worker paused past its lease, whose workflows were taken over, must not start
    a step of them once it resumes, even one queued before the pause (here: its only
    thread is in a 4 s step when paused, and one more workflow waits for it)."""
    hold = 4.0
    workflows = [f"order-{n}" for n in range(3)]
    # One thread: X runs order-0's first step (4 s) and holds order-1 in its queue (a
    # worker takes one pool's worth of synchronous workflows beyond its threads, no more:
    # order-2 stays unowned).
    x = fleet.start(lease_seconds="2", max_threads="1", max_workflows="3")
    client = fleet.client()
    fleet.wait_registered(x)
    x_executor = fleet.executor_of(x)
    for wf in workflows:
        client.start("checkout", wf, hold, workflow_id=wf)
    wait_for(lambda: in_flight(fleet.ledger, x.pid) == 1, 10, "X to run a step")
    # X claims one workflow per round (its one thread): the second follows at once.
    owners = "SELECT id, owner FROM perdure_workflows ORDER BY id"
    expected = [("order-0", x_executor), ("order-1", x_executor), ("order-2", None)]
    wait_for(lambda: fleet.query(owners) == expected, 10, "X to own two of the three")
    time.sleep(0.5)
    assert fleet.query(owners) == expected, "X claimed more than its thread and its queue"
    y = fleet.start(lease_seconds="2", max_threads="4")
    fleet.wait_registered(y)

    # Pause X past its lease: Y takes all three over, and runs their first steps.
    x.pause()
    mark(fleet.ledger, "stop", pid=x.pid)
    try:
        wait_for(
            lambda: (
                {o for (o,) in fleet.query("SELECT owner FROM perdure_workflows")}
                == {fleet.executor_of(y)}
            ),
            10,
            "Y to take every workflow over",
            interval=0.02,
        )
    finally:
        cont = mark(fleet.ledger, "cont", pid=x.pid)
        x.resume()

    # X's step of order-0 ends (about a second later) and is not recorded; X must then
    # not start anything for these workflows: it owns none of them.
    def x_ended_its_step() -> bool:
        return any(e["pid"] == x.pid and e.get("phase") == "end" for e in read_ledger(fleet.ledger))

    wait_for(x_ended_its_step, 10, "X's step to end")
    time.sleep(1.0)
    started = [
        (e["wf"], e["step"], round(e["t"] - cont["t"], 2))
        for e in read_ledger(fleet.ledger)
        if e.get("phase") == "start" and e["pid"] == x.pid and e["t"] > cont["t"]
    ]
    assert not started, f"X started steps of workflows taken from it, after it resumed: {started}"

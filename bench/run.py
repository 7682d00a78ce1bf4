"""perdure's benchmark on SQLite: the workload, floor and targets of ../shared/BENCHMARK.md.

    .venv/bin/python bench/run.py                      # full run, synchronous=FULL (make bench)
    .venv/bin/python bench/run.py --synchronous normal
    .venv/bin/python bench/run.py --quick              # reduced counts, a few seconds
    .venv/bin/python bench/run.py --only steps         # one figure, e.g. under a profiler

Every figure runs in a fresh temporary database and is printed beside the floor measured
in the same run (one INSERT + COMMIT into SQLite in WAL with the same ``synchronous``),
so that the ratios hold on a noisy machine. Results go to bench/results/latest.json (and,
for a full run, to bench/results/sqlite-<synchronous>.json as well).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.workloads import build, plain_checkout  # noqa: E402

RESULTS = ROOT / "bench" / "results"

TARGETS = {
    "sequential_p50_commits": 8.0,  # sequential checkout p50 <= 8 floor commits
    "step_overhead_commits": 1.5,  # per-step overhead <= 1.5 floor commits
    "throughput_per_s": 1000.0,  # >= 1,000 checkouts/s on 2 cores
    "recovery_s": 10.0,  # all interrupted checkouts done within 10 s of the new worker
}

FULL = {
    "floor_commits": 500,
    "floor_bracket": 200,
    "floor_plain": 200_000,
    "seq_warmup": 30,
    "seq_timed": 300,
    "steps": 1000,
    "steps_repeats": 3,
    "throughput": 2000,
    "throughput_repeats": 3,
    "recovery": 2000,
    "recovery_repeats": 3,
}
QUICK = {
    "floor_commits": 200,
    "floor_bracket": 100,
    "floor_plain": 50_000,
    "seq_warmup": 10,
    "seq_timed": 50,
    "steps": 200,
    "steps_repeats": 1,
    "throughput": 300,
    "throughput_repeats": 1,
    "recovery": 300,
    "recovery_repeats": 1,
}

SECTIONS = (
    "sequential",
    "steps",
    "throughput_sync",
    "throughput_sync_gather",
    "throughput_async",
    "recovery",
)


# -- helpers -------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Workspace:
    """A temporary folder; every figure gets a fresh database file in it."""

    def __init__(self, parent: str | None, synchronous: str, keep: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="perdure-bench-", dir=parent))
        self.synchronous = synchronous
        self.keep = keep
        self._n = 0

    def db(self, label: str) -> Path:
        self._n += 1
        return self.dir / f"{self._n:02d}-{label}.db"

    def url(self, path: Path) -> str:
        # sqlite:/// + /absolute/path = four slashes.
        return f"sqlite:///{path}?synchronous={self.synchronous}"

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def count_status(path: Path, status: str = "SUCCEEDED") -> int:
    conn = sqlite3.connect(path, timeout=30)
    try:
        row = conn.execute(
            "SELECT count(*) FROM perdure_workflows WHERE status = ?", (status,)
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


def db_summary(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        by_status = dict(
            conn.execute("SELECT status, count(*) FROM perdure_workflows GROUP BY status")
        )
        steps = conn.execute("SELECT count(*) FROM perdure_steps").fetchone()[0]
        recoveries = conn.execute(
            "SELECT coalesce(sum(recoveries), 0) FROM perdure_workflows"
        ).fetchone()[0]
    finally:
        conn.close()
    summary = {str(k).lower(): int(v) for k, v in by_status.items()}
    summary["steps"] = int(steps)
    summary["recoveries"] = int(recoveries)
    return summary


class Load:
    """CPU that *other* processes used on this machine while a block ran, in cores.

    The machine's busy time (/proc/stat) minus this process's and its waited-for
    children's CPU time: a number well above 0 means the figures were measured on a
    busy machine and are pessimistic.
    """

    _TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.busy0 = self._busy()
        self.own0 = self._own()

    @classmethod
    def _busy(cls) -> float:
        try:
            with open("/proc/stat") as stat:
                fields = [int(x) for x in stat.readline().split()[1:9]]
        except (OSError, ValueError):
            return float("nan")
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) / cls._TICK

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def foreign_cores(self) -> float:
        wall = time.perf_counter() - self.wall0
        foreign = (self._busy() - self.busy0) - (self._own() - self.own0)
        return max(0.0, foreign / wall) if wall > 0 else 0.0


def settle(max_wait: float, threshold: float = 0.15) -> dict[str, Any]:
    """Wait (at most ``max_wait`` s) until other processes use under ``threshold`` cores
    for two half-second samples in a row."""
    start = time.monotonic()
    quiet = 0
    foreign = float("nan")
    while time.monotonic() - start < max_wait:
        load = Load()
        time.sleep(0.5)
        foreign = load.foreign_cores()
        quiet = quiet + 1 if foreign < threshold else 0
        if quiet >= 2:
            break
    return {"waited_s": time.monotonic() - start, "foreign_cores": foreign, "quiet": quiet >= 2}


class CommitCounter:
    """Diagnostics: the size of every transaction perdure's group committer runs.

    Wraps the private ``GroupCommitter._run`` (one call = one transaction); if perdure's
    internals changed and it is gone, the counts are just not reported.
    """

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.installed = False
        try:
            from perdure.storage._batch import GroupCommitter
        except ImportError:
            return
        original = getattr(GroupCommitter, "_run", None)
        if original is None:
            return
        sizes = self.sizes

        def _run(committer: Any, conn: Any, batch: list[Any]) -> Any:
            sizes.append(len(batch))
            return original(committer, conn, batch)

        GroupCommitter._run = _run  # type: ignore[method-assign]
        self.installed = True

    def reset(self) -> None:
        self.sizes.clear()

    def summary(self, workflows: int) -> dict[str, Any] | None:
        if not self.installed or not self.sizes:
            return None
        writes = sum(self.sizes)
        return {
            "transactions": len(self.sizes),
            "writes": writes,
            "mean_batch": writes / len(self.sizes),
            "max_batch": max(self.sizes),
            "commits_per_workflow": len(self.sizes) / workflows,
            "writes_per_workflow": writes / workflows,
        }


COMMITS = CommitCounter()


# -- 1. the floor --------------------------------------------------------------------------


def floor_commit(ws: Workspace, n: int) -> dict[str, Any]:
    """One BEGIN IMMEDIATE + INSERT + COMMIT per row, WAL, the store's synchronous setting."""
    path = ws.db("floor")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {ws.synchronous.upper()}")
    conn.execute(
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, workflow_id TEXT, position TEXT, output TEXT)"
    )
    payload = json.dumps({"order": 12345, "step": "authorize_payment"})
    samples: list[float] = []
    warmup = 20
    cpu0 = 0.0
    for i in range(n + warmup):
        if i == warmup:
            cpu0 = time.thread_time()
        t0 = time.perf_counter_ns()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO rows (workflow_id, position, output) VALUES (?, ?, ?)",
            (f"wf-{i}", str(i % 4), payload),
        )
        conn.execute("COMMIT")
        samples.append((time.perf_counter_ns() - t0) / 1000)
    cpu = time.thread_time() - cpu0
    conn.close()
    timed = samples[warmup:]
    ordered = sorted(timed)
    return {
        "n": n,
        "median_us": statistics.median(ordered),
        "p90_us": percentile(ordered, 90),
        "min_us": ordered[0],
        "cpu_us": cpu * 1e6 / n,
        "samples_us": timed,
    }


def floor_plain(n: int) -> dict[str, Any]:
    """The four checkout steps as plain Python calls."""
    t0 = time.perf_counter_ns()
    for i in range(n):
        plain_checkout(i)
    per_checkout = (time.perf_counter_ns() - t0) / 1000 / n
    return {"n": n, "checkout_us": per_checkout, "step_us": per_checkout / 4}


# -- 2. sequential latency -----------------------------------------------------------------


def sequential(ws: Workspace, warmup: int, timed: int) -> dict[str, Any]:
    w = build(ws.url(ws.db("sequential")))
    app = w.app
    samples: list[float] = []
    with app:
        for i in range(warmup):
            app.run(w.checkout, f"warm-{i}")
        COMMITS.reset()
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        for i in range(timed):
            t0 = time.perf_counter_ns()
            result = app.run(w.checkout, f"order-{i}")
            samples.append((time.perf_counter_ns() - t0) / 1e6)
            assert result == {"order": f"order-{i}", "step": "confirm_order"}, result
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        commits = COMMITS.summary(timed)
    ordered = sorted(samples)
    return {
        "warmup": warmup,
        "n": timed,
        "p50_ms": statistics.median(ordered),
        "p99_ms": percentile(ordered, 99),
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "cpu_ms_per_checkout": cpu * 1000 / timed,
        "cpu_cores": cpu / wall,
        "commits": commits,
        "samples_ms": samples,
    }


# -- 3. step overhead ----------------------------------------------------------------------


def step_overhead(ws: Workspace, n_steps: int, repeats: int) -> dict[str, Any]:
    path = ws.db("steps")
    w = build(ws.url(path))
    app = w.app
    per_step: list[float] = []
    cpu_per_step: list[float] = []
    with app:
        app.run(w.many_steps, 20)  # warm-up: store open, pool thread started
        COMMITS.reset()
        for _ in range(repeats):
            cpu0 = time.process_time()
            t0 = time.perf_counter_ns()
            assert app.run(w.many_steps, n_steps) == n_steps
            per_step.append((time.perf_counter_ns() - t0) / 1000 / n_steps)
            cpu_per_step.append((time.process_time() - cpu0) * 1e6 / n_steps)
        commits = COMMITS.summary(repeats)
    summary = db_summary(path)
    assert summary["steps"] == 20 + repeats * n_steps, summary
    return {
        "steps": n_steps,
        "repeats": repeats,
        "per_step_us": statistics.median(per_step),
        "per_step_us_all": per_step,
        "cpu_us_per_step": statistics.median(cpu_per_step),
        "commits": commits,
    }


# -- 4. throughput -------------------------------------------------------------------------


def _drive_sync_loop(app: Any, fn: Any, n: int) -> None:
    handles = [app.start(fn, f"order-{i}") for i in range(n)]
    for handle in handles:
        handle.result(timeout=120)


def _drive_gather(app: Any, fn: Any, n: int) -> None:
    async def main() -> None:
        handles = await asyncio.gather(*(app.start_async(fn, f"order-{i}") for i in range(n)))
        await asyncio.gather(*(handle.result_async(timeout=120) for handle in handles))

    asyncio.run(main())


def _throughput_once(
    ws: Workspace, label: str, n: int, fn_name: str, drive: Callable[[Any, Any, int], None]
) -> dict[str, Any]:
    path = ws.db(label)
    w = build(ws.url(path))
    app = w.app
    fn = getattr(w, fn_name)
    with app:
        app.run(fn, "warm-up")
        COMMITS.reset()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        drive(app, fn, n)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        commits = COMMITS.summary(n)
    done = count_status(path)
    assert done == n + 1, f"{label}: {done} of {n + 1} SUCCEEDED"
    return {
        "wall_s": wall,
        "per_s": n / wall,
        "cpu_ms_per_checkout": cpu * 1000 / n,
        "cpu_cores": cpu / wall,
        "commits": commits,
    }


def _throughput(
    ws: Workspace,
    label: str,
    n: int,
    repeats: int,
    fn_name: str,
    drive: Callable[[Any, Any, int], None],
) -> dict[str, Any]:
    runs = [_throughput_once(ws, label, n, fn_name, drive) for _ in range(repeats)]
    middle = sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]
    return {
        "n": n,
        "repeats": repeats,
        **middle,
        "per_s_all": [r["per_s"] for r in runs],
    }


def throughput_sync(ws: Workspace, n: int, repeats: int) -> dict[str, Any]:
    """Sync-def checkout, sync client: a loop of app.start(), then each handle.result()."""
    return _throughput(ws, "throughput-sync", n, repeats, "checkout", _drive_sync_loop)


def throughput_sync_gather(ws: Workspace, n: int, repeats: int) -> dict[str, Any]:
    """Sync-def checkout submitted all at once: gather(start_async), gather(result_async)."""
    return _throughput(ws, "throughput-sync-gather", n, repeats, "checkout", _drive_gather)


def throughput_async(ws: Workspace, n: int, repeats: int) -> dict[str, Any]:
    """Async-def checkout with async steps: gather(start_async), gather(result_async)."""
    return _throughput(ws, "throughput-async", n, repeats, "checkout_async", _drive_gather)


# -- 5. recovery ---------------------------------------------------------------------------


def _worker_command() -> list[str]:
    script = Path(sys.executable).with_name("perdure")
    if script.exists():
        return [str(script), "worker", "bench.workloads:app"]
    return [sys.executable, "-m", "perdure", "worker", "bench.workloads:app"]


def _first_log_time(log_path: Path) -> float | None:
    """Wall time (epoch s) of the first timestamped line of a worker's log: the worker's
    logging starts when its executor is up (module imported, store opened)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            stamp = _dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            continue
        return stamp.timestamp()
    return None


def _recovery_once(ws: Workspace, n: int, kill_fraction: float) -> dict[str, Any]:
    path = ws.db("recovery")
    url = ws.url(path)
    client = build(url)
    app = client.app

    async def submit() -> None:
        await asyncio.gather(*(app.start_async(client.checkout, f"order-{i}") for i in range(n)))

    asyncio.run(submit())  # no executor in this process: all n are PENDING, and durable
    app.shutdown()
    env = {**os.environ, "PERDURE_DATABASE_URL": url}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    tag = path.stem

    def spawn(name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = ws.dir / f"{tag}-worker-{name}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                _worker_command(), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        return proc, log_path

    # Worker A: let it get some way into the 2,000, then kill it without warning.
    proc_a, log_a = spawn("a")
    kill_at = int(n * kill_fraction)
    deadline = time.monotonic() + 120
    try:
        while count_status(path) < kill_at:
            if proc_a.poll() is not None:
                raise RuntimeError(f"worker A exited early: {log_a.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("worker A made no progress in 120 s")
            time.sleep(0.005)
    finally:
        proc_a.send_signal(signal.SIGKILL)
        proc_a.wait()
    at_kill = db_summary(path)

    # Worker B: from its process start until all n are SUCCEEDED.
    wall_start = time.time()
    t0 = time.perf_counter()
    proc_b, log_b = spawn("b")
    deadline = time.monotonic() + 120
    try:
        while True:
            done = count_status(path)
            if done >= n:
                elapsed = time.perf_counter() - t0
                break
            if proc_b.poll() is not None:
                raise RuntimeError(f"worker B exited: {log_b.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"recovery: only {done} of {n} done after 120 s")
            time.sleep(0.01)
    finally:
        proc_b.send_signal(signal.SIGTERM)
        try:
            proc_b.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc_b.kill()
            proc_b.wait()
    started = _first_log_time(log_b)
    final = db_summary(path)
    assert final.get("succeeded") == n and final["steps"] == 4 * n, final
    return {
        "seconds": elapsed,
        "worker_startup_s": None if started is None else max(0.0, started - wall_start),
        "killed_after_succeeded": at_kill.get("succeeded", 0),
        "at_kill": at_kill,
        "final": final,
    }


def recovery(ws: Workspace, n: int, repeats: int, kill_fraction: float = 0.25) -> dict[str, Any]:
    """n checkouts started; worker A killed with SIGKILL once ``kill_fraction`` of them
    finished; seconds from worker B's process start until all n are SUCCEEDED."""
    runs = [_recovery_once(ws, n, kill_fraction) for _ in range(repeats)]
    middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {
        "n": n,
        "repeats": repeats,
        **middle,
        "seconds_max": max(r["seconds"] for r in runs),
        "seconds_all": [r["seconds"] for r in runs],
    }


# -- machine -------------------------------------------------------------------------------


def machine(tmp_dir: Path) -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    fs = {"mount": "?", "device": "?", "type": "?", "options": "?"}
    try:
        best = ""
        resolved = str(tmp_dir.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind, options = line.split()[:4]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best = mount
                fs = {"mount": mount, "device": device, "type": kind, "options": options}
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "src"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "?", False
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        loadavg = []
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "tmp_dir": str(tmp_dir),
        "filesystem": fs,
        "perdure_commit": commit,
        "src_modified": dirty,
        "loadavg_at_start": loadavg,
    }


# -- the report ----------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


def _commits_note(section: dict[str, Any]) -> str:
    commits = section.get("commits")
    if not commits:
        return ""
    return f", {commits['commits_per_workflow']:.2f} commits/wf"


def table(results: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    rows: list[list[str]] = []
    checks: dict[str, Any] = {}
    floor = results["floor"]
    overall = floor["commit_us"]
    plain = floor["plain"]
    rows.append(
        ["floor (i): the 4 steps as plain calls", f"{plain['checkout_us']:.2f} µs", "", "", "", ""]
    )
    start, end = floor["commit_start"], floor.get("commit_end")
    spread = f"start {start['median_us']:.0f}"
    if end:
        spread += f", end {end['median_us']:.0f}"
    rows.append(
        [
            "floor (ii): INSERT+COMMIT, median",
            f"{overall:.1f} µs (run {spread}; cpu {start['cpu_us']:.0f})",
            "",
            "1x",
            "",
            "",
        ]
    )
    seq = results.get("sequential")
    if seq:
        commit = seq["floor_us"]
        commit_txt = f"{commit:.1f} µs"
        ratio = seq["p50_ms"] * 1000 / commit
        ok = ratio <= TARGETS["sequential_p50_commits"]
        checks["sequential_p50"] = {"ms": seq["p50_ms"], "ratio": ratio, "met": ok}
        rows.append(
            [
                "sequential checkout, p50",
                f"{seq['p50_ms']:.3f} ms{_commits_note(seq)}",
                commit_txt,
                f"{ratio:.1f}x",
                "<= 8x",
                verdict(ok),
            ]
        )
        rows.append(
            [
                "sequential checkout, p99",
                f"{seq['p99_ms']:.3f} ms",
                commit_txt,
                f"{seq['p99_ms'] * 1000 / commit:.1f}x",
                "",
                "",
            ]
        )
    steps = results.get("steps")
    if steps:
        commit = steps["floor_us"]
        commit_txt = f"{commit:.1f} µs"
        ratio = steps["per_step_us"] / commit
        ok = ratio <= TARGETS["step_overhead_commits"]
        checks["step_overhead"] = {"us": steps["per_step_us"], "ratio": ratio, "met": ok}
        rows.append(
            [
                f"step overhead, {steps['steps']} steps",
                f"{steps['per_step_us']:.1f} µs/step",
                commit_txt,
                f"{ratio:.2f}x",
                "<= 1.5x",
                verdict(ok),
            ]
        )
    for key, label, targeted in (
        ("throughput_sync", "throughput, sync def, app.start loop", True),
        ("throughput_sync_gather", "throughput, sync def, gather(start_async)", False),
        ("throughput_async", "throughput, async def, gather(start_async)", True),
    ):
        tp = results.get(key)
        if not tp:
            continue
        commit = tp["floor_us"]
        commit_txt = f"{commit:.1f} µs"
        ok = tp["per_s"] >= TARGETS["throughput_per_s"]
        if targeted:
            checks[key] = {"per_s": tp["per_s"], "met": ok}
        # Wall time per checkout in floor commits: < 6 means commits were shared.
        per_checkout = 1e6 / tp["per_s"] / commit
        rows.append(
            [
                label,
                f"{tp['per_s']:.0f} wf/s{_commits_note(tp)}",
                commit_txt,
                f"{per_checkout:.2f}x",
                ">= 1000/s" if targeted else "(info)",
                verdict(ok) if targeted else "",
            ]
        )
    rec = results.get("recovery")
    if rec:
        ok = rec["seconds_max"] <= TARGETS["recovery_s"]
        checks["recovery"] = {"seconds": rec["seconds"], "max": rec["seconds_max"], "met": ok}
        start_s = rec.get("worker_startup_s")
        extra = f", startup {start_s:.2f} s" if start_s is not None else ""
        rows.append(
            [
                f"recovery, {rec['n']} checkouts",
                f"{rec['seconds']:.2f} s (max {rec['seconds_max']:.2f}{extra})",
                "",
                "",
                "<= 10 s",
                verdict(ok),
            ]
        )
    rows.append(
        [
            "waiting cost",
            "not measured: durable sleep/recv not built yet",
            "",
            "",
            "< 200 MB",
            "n/a",
        ]
    )
    return rows, checks


def print_table(rows: list[list[str]], title: str) -> None:
    header = ["figure", "measured", "floor", "vs floor", "target", "result"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(title)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="perdure's benchmark on SQLite (see ../shared/BENCHMARK.md)"
    )
    parser.add_argument("--quick", action="store_true", help="reduced counts (a few seconds)")
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this figure (repeatable); the floor is always measured",
    )
    parser.add_argument("--dir", default=None, help="parent of the temporary databases")
    parser.add_argument("--keep", action="store_true", help="keep the temporary databases")
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="wait up to this many seconds for other processes to go quiet first "
        "(default 30, or 0 with --quick/--only)",
    )
    parser.add_argument(
        "--output", default=str(RESULTS / "latest.json"), help="where to write the JSON result"
    )
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    only = set(args.only or SECTIONS)
    complete = not args.quick and args.only is None
    settle_for = args.settle if args.settle is not None else (30.0 if complete else 0.0)

    ws = Workspace(args.dir, args.synchronous, args.keep)
    results: dict[str, Any] = {
        "benchmark": "perdure SQLite benchmark (../shared/BENCHMARK.md)",
        "command": " ".join([Path(sys.executable).name, "bench/run.py", *(argv or sys.argv[1:])]),
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "store": "sqlite",
        "synchronous": args.synchronous.upper(),
        "quick": args.quick,
        "counts": counts,
        "machine": machine(ws.dir),
        "diagnostics": {"commit_counter": COMMITS.installed},
    }
    try:
        if settle_for > 0:
            log(f"waiting up to {settle_for:.0f} s for the machine to be quiet ...")
            results["settle"] = settle(settle_for)
            if not results["settle"]["quiet"]:
                log(
                    f"  still busy: other processes use "
                    f"{results['settle']['foreign_cores']:.2f} cores; measuring anyway"
                )
        started = time.perf_counter()
        whole = Load()
        log(f"databases in {ws.dir} (synchronous={args.synchronous.upper()})")
        results["floor"] = {
            "commit_start": floor_commit(ws, counts["floor_commits"]),
            "plain": floor_plain(counts["floor_plain"]),
        }
        sections: dict[str, Callable[[], dict[str, Any]]] = {
            "sequential": lambda: sequential(ws, counts["seq_warmup"], counts["seq_timed"]),
            "steps": lambda: step_overhead(ws, counts["steps"], counts["steps_repeats"]),
            "throughput_sync": lambda: throughput_sync(
                ws, counts["throughput"], counts["throughput_repeats"]
            ),
            "throughput_sync_gather": lambda: throughput_sync_gather(
                ws, counts["throughput"], counts["throughput_repeats"]
            ),
            "throughput_async": lambda: throughput_async(
                ws, counts["throughput"], counts["throughput_repeats"]
            ),
            "recovery": lambda: recovery(ws, counts["recovery"], counts["recovery_repeats"]),
        }
        floor_samples: list[float] = []
        for name in SECTIONS:
            if name not in only:
                continue
            log(f"running {name} ...")
            t0 = time.perf_counter()
            load = Load()
            before = floor_commit(ws, counts["floor_bracket"])
            results[name] = section = sections[name]()
            after = floor_commit(ws, counts["floor_bracket"])
            section["foreign_cores"] = load.foreign_cores()
            # The floor of this figure's ratios: commits measured right before and after it.
            bracket = before.pop("samples_us") + after.pop("samples_us")
            floor_samples.extend(bracket)
            section["floor_us"] = statistics.median(bracket)
            section["floor_before_us"] = before["median_us"]
            section["floor_after_us"] = after["median_us"]
            log(
                f"  {name} took {time.perf_counter() - t0:.1f} s "
                f"(other processes used {results[name]['foreign_cores']:.2f} cores meanwhile)"
            )
        if complete:
            results["floor"]["commit_end"] = floor_commit(ws, counts["floor_commits"])
        # The run's overall floor: the median over every floor sample of the run.
        floor_samples.extend(
            s
            for key in ("commit_start", "commit_end")
            for s in results["floor"].get(key, {}).get("samples_us", [])
        )
        results["floor"]["commit_us"] = statistics.median(floor_samples)
        results["foreign_cores"] = whole.foreign_cores()
        results["elapsed_s"] = time.perf_counter() - started
    finally:
        ws.close()

    rows, checks = table(results)
    results["targets"] = checks
    results["table"] = rows
    m = results["machine"]
    title = (
        f"perdure benchmark, SQLite WAL synchronous={results['synchronous']}"
        f"{' (quick)' if args.quick else ''}: {m['nproc']} x {m['cpu']}, Python {m['python']}, "
        f"SQLite {m['sqlite']}, {m['filesystem']['type']} on {m['filesystem']['device']}"
    )
    print()
    print_table(rows, title)
    print(
        "floor = median of the floor commits measured just before and after that figure; "
        "vs floor = figure / floor\n(throughput: wall time per checkout / floor; "
        "under 6 means checkouts shared commits)"
    )
    print(
        f"\n{results['elapsed_s']:.0f} s; other processes used "
        f"{results['foreign_cores']:.2f} cores on average meanwhile"
    )

    for key in ("commit_start", "commit_end"):
        results["floor"].get(key, {}).pop("samples_us", None)
    for key in ("sequential",):
        if key in results:
            results[key].pop("samples_ms", None)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, default=str, ensure_ascii=False) + "\n"
    output.write_text(text)
    if complete and output.resolve() == (RESULTS / "latest.json").resolve():
        (RESULTS / f"sqlite-{args.synchronous}.json").write_text(text)
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The tables a run prints: each figure beside its floor and target, and the multi-process
figure."""

from __future__ import annotations

from typing import Any

#: The targets of ../shared/BENCHMARK.md, the same for every store but where it says otherwise.
TARGETS = {
    "sequential_p50_commits": 7.0,  # sequential checkout p50 <= 7 floor commits (PostgreSQL)
    "step_overhead_commits": 1.2,  # per-step overhead <= 1.2 floor commits (PostgreSQL)
    "throughput_per_s": 1500.0,  # >= 1,500 checkouts/s on 2 cores, one worker process
    "recovery_s": 3.0,  # all interrupted checkouts done within 3 s of the new worker's start
    "waiting_rss_mb": 100.0,  # 10,000 waiting workflows: worker under 100 MB resident
}
#: Where a store's targets differ (by the start of the run's title).
STORE_TARGETS = {
    "SQLite": {"sequential_p50_commits": 6.0, "step_overhead_commits": 1.5},
    # synchronous=NORMAL: a tiny floor, so the cost is pure CPU.
    "SQLite NORMAL": {"sequential_p50_commits": 6.0, "step_overhead_commits": 2.0},
}


def targets_for(title: str) -> dict[str, float]:
    """The targets of the store a run's title names."""
    targets = dict(TARGETS)
    if title.startswith("SQLite"):
        key = "SQLite NORMAL" if "synchronous=NORMAL" in title else "SQLite"
        targets.update(STORE_TARGETS[key])
    return targets


def verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


def _commits_note(section: dict[str, Any]) -> str:
    commits = section.get("commits")
    if not commits:
        return ""
    return f", {commits['commits_per_workflow']:.2f} commits/wf"


def _cpu_note(section: dict[str, Any], per_step: bool = False) -> str:
    """The client's (this process's) CPU per checkout, and the local database server's
    when it was measured (PostgreSQL on this host)."""
    if per_step:
        client, server, unit = (
            section.get("cpu_us_per_step"),
            section.get("server_cpu_us_per_step"),
            "µs",
        )
    else:
        client, server, unit = (
            section.get("cpu_ms_per_checkout"),
            section.get("server_cpu_ms_per_checkout"),
            "ms",
        )
    if client is None:
        return ""
    digits = 0 if per_step else 2
    note = f"; cpu {client:.{digits}f} {unit}"
    if server is not None:
        note += f" + server {server:.{digits}f} {unit}"
    return note


def table(results: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    rows: list[list[str]] = []
    checks: dict[str, Any] = {}
    targets = targets_for(str(results.get("title", "")))
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
    cpu = f"cpu {start['cpu_us']:.0f}"
    if start.get("server_cpu_us") is not None:
        cpu += f" + server {start['server_cpu_us']:.0f}"
    rows.append(
        [
            "floor (ii): INSERT+COMMIT, median",
            f"{overall:.1f} µs (run {spread}; {cpu})",
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
        ok = ratio <= targets["sequential_p50_commits"]
        checks["sequential_p50"] = {"ms": seq["p50_ms"], "ratio": ratio, "met": ok}
        rows.append(
            [
                "sequential checkout, p50",
                f"{seq['p50_ms']:.3f} ms{_commits_note(seq)}{_cpu_note(seq)}",
                commit_txt,
                f"{ratio:.1f}x",
                f"<= {targets['sequential_p50_commits']:g}x",
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
        ok = ratio <= targets["step_overhead_commits"]
        checks["step_overhead"] = {"us": steps["per_step_us"], "ratio": ratio, "met": ok}
        rows.append(
            [
                f"step overhead, {steps['steps']} steps",
                f"{steps['per_step_us']:.1f} µs/step{_cpu_note(steps, per_step=True)}",
                commit_txt,
                f"{ratio:.2f}x",
                f"<= {targets['step_overhead_commits']:g}x",
                verdict(ok),
            ]
        )
    for key, label, targeted in (
        ("throughput_sync", "throughput, sync def, app.start loop", True),
        ("throughput_sync_gather", "throughput, sync def, gather(start_async)", True),
        ("throughput_async", "throughput, async def, gather(start_async)", True),
        ("throughput_async_loop", "throughput, async def, app.start loop", True),
    ):
        tp = results.get(key)
        if not tp:
            continue
        commit = tp["floor_us"]
        commit_txt = f"{commit:.1f} µs"
        ok = tp["per_s"] >= targets["throughput_per_s"]
        if targeted:
            checks[key] = {"per_s": tp["per_s"], "met": ok}
        # Wall time per checkout in floor commits: < 6 means commits were shared.
        per_checkout = 1e6 / tp["per_s"] / commit
        rows.append(
            [
                label,
                f"{tp['per_s']:.0f} wf/s{_commits_note(tp)}{_cpu_note(tp)}",
                commit_txt,
                f"{per_checkout:.2f}x",
                f">= {targets['throughput_per_s']:g}/s" if targeted else "(info)",
                verdict(ok) if targeted else "",
            ]
        )
    rec = results.get("recovery")
    if rec:
        ok = rec["seconds_max"] <= targets["recovery_s"]
        checks["recovery"] = {"seconds": rec["seconds"], "max": rec["seconds_max"], "met": ok}
        start_s = rec.get("worker_startup_s")
        extra = f", startup {start_s:.2f} s" if start_s is not None else ""
        rows.append(
            [
                f"recovery, {rec['n']} checkouts",
                f"{rec['seconds']:.2f} s (max {rec['seconds_max']:.2f}{extra})",
                "",
                "",
                f"<= {targets['recovery_s']:g} s",
                verdict(ok),
            ]
        )
    wait = results.get("waiting")
    if wait:
        idle, held = wait["idle"], wait["settled_2s"]
        rss = max(held["rss_mb"], wait["all_suspended"]["rss_mb"])
        rss_ok = rss < targets["waiting_rss_mb"]
        # "No thread each": the worker's threads stay within its pool's bound (idle
        # threads + max_threads + its spawner), whatever the number of waiting workflows.
        bound = idle["threads"] + wait["max_threads"] + 1  # and the pool's spawner
        threads_ok = held["threads"] <= bound and wait["peak_threads"] <= bound
        checks["waiting"] = {
            "rss_mb": rss,
            "idle_rss_mb": idle["rss_mb"],
            "threads_idle": idle["threads"],
            "threads_waiting": held["threads"],
            "peak_threads": wait["peak_threads"],
            "met": rss_ok and threads_ok,
        }
        rows.append(
            [
                f"waiting cost, {wait['n']} suspended, worker RSS",
                f"{rss:.1f} MB (idle {idle['rss_mb']:.1f}, peak {held['peak_rss_mb']:.1f}; "
                f"all suspended in {wait['to_suspend_s']:.2f} s)",
                "",
                "",
                f"< {targets['waiting_rss_mb']:g} MB",
                verdict(rss_ok),
            ]
        )
        rows.append(
            [
                "waiting cost, worker threads",
                f"{held['threads']} (idle {idle['threads']}, "
                f"at most {wait['peak_threads']} while suspending)",
                "",
                "",
                f"<= {idle['threads']}+{wait['max_threads']}+1",
                verdict(threads_ok),
            ]
        )
    return rows, checks


def multiprocess_table(section: dict[str, Any]) -> list[list[str]]:
    rows = []
    for run in section["runs"].values():
        server = run["server_cpu_ms_per_checkout"]
        rows.append(
            [
                "sync def" if run["workflow"] == "checkout" else "async def",
                run.get("submission", "gather"),
                str(run["workers"]),
                f"{run['per_s']:.0f}",
                f"{run['wall_s']:.2f} (submit {run['submit_s']:.2f})",
                "/".join(str(c) for c in run["completed_by_worker"]),
                f"{run['worker_cpu_ms_per_checkout']:.2f}",
                "?" if server is None else f"{server:.2f}",
                f"{run['client_cpu_ms_per_checkout']:.2f}",
                f"{run['worker_commits']['commits_per_workflow']:.2f}",
                f"{run['cores_used']:.2f}",
            ]
        )
    return rows


def print_table(rows: list[list[str]], title: str, header: list[str] | None = None) -> None:
    header = header or ["figure", "measured", "floor", "vs floor", "target", "result"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(title)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


MP_HEADER = [
    "workflow",
    "client",
    "workers",
    "wf/s",
    "wall s",
    "done by each worker",
    "worker cpu ms/wf",
    "server cpu ms/wf",
    "client cpu ms/wf",
    "commits/wf",
    "cores",
]


def print_report(results: dict[str, Any], quick: bool) -> None:
    """Print a run's tables, and add them (and the targets met) to ``results``."""
    m = results["machine"]
    print(
        f"\nperdure benchmark{' (quick)' if quick else ''}: {m['nproc']} x {m['cpu']}, "
        f"Python {m['python']}, psycopg {m['psycopg']}, perdure {m['perdure_commit']}"
        f"{' + changes in src/' if m['src_modified'] else ''} ({m['perdure_path']})"
    )
    if results.get("src_modified_at_end") and not m["src_modified"]:
        print("warning: src/ was modified while the benchmark ran")
    if results["worker_app_settings"]:
        print(f"worker processes ran with App settings {results['worker_app_settings']}")
    if results.get("pinned_cores"):
        cores = results["pinned_cores"]
        print(f"pinned (--pin): this process on core {cores[0]}, workers round robin on {cores}")
    for store, res in results["stores"].items():
        if "skipped" in res:
            print(f"\n{store}: skipped ({res['skipped']})")
            continue
        rows, checks = table(res)
        res["targets"] = checks
        res["table"] = rows
        print()
        print_table(rows, f"perdure on {res['title']}{' (quick)' if quick else ''}")
        mp = res.get("multiprocess")
        if mp:
            mp_rows = multiprocess_table(mp)
            res["multiprocess_table"] = mp_rows
            print()
            print_table(
                mp_rows,
                f"multi-process throughput: {mp['n']} checkouts started by a client, "
                "claimed by `perdure worker` processes",
                MP_HEADER,
            )
        server = res.get("server_cores")
        server_txt = ""
        if server is not None:
            server_txt = (
                f"; the PostgreSQL server used {server:.2f} cores"
                if server == server
                else "; the PostgreSQL server restarted (its CPU is unknown)"
            )
        print(
            f"{store}: {res['elapsed_s']:.0f} s; other processes used "
            f"{res['foreign_cores']:.2f} cores on average meanwhile{server_txt}"
        )
    print(
        "\nfloor = median of the floor commits measured just before and after that figure; "
        "vs floor = figure / floor\n(throughput: wall time per checkout / floor; "
        "under 6 means checkouts shared commits)"
    )
    print(f"\n{results['elapsed_s']:.0f} s in all")

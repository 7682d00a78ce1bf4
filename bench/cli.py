"""The command line of the benchmark (bench/run.py, ``python -m bench``): parse the
options, run each store, print the tables and write the JSON result."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import LOG_COUNT, capture_logs, log
from bench.cpu import Load, settle
from bench.machine import machine, src_modified
from bench.pinning import pin_this_process, pinned
from bench.report import print_report
from bench.runner import run_store
from bench.settings import (
    DEFAULT_POSTGRES_URL,
    FULL,
    OPT_IN,
    QUICK,
    RESULTS,
    SECTIONS,
    STORES,
)
from bench.workspace import PostgresWorkspace, SQLiteWorkspace, Workspace


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be >= 1: {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="perdure's benchmark on SQLite and PostgreSQL (see ../shared/BENCHMARK.md)"
    )
    parser.add_argument(
        "--store",
        action="append",
        choices=STORES,
        help="run this store (repeatable); default: both, PostgreSQL only if reachable",
    )
    parser.add_argument(
        "--quick", action="store_true", help="reduced counts (~20 s for both stores)"
    )
    parser.add_argument(
        "--synchronous", choices=("full", "normal"), default="full", help="SQLite's setting"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PERDURE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help=f"the PostgreSQL database (default {DEFAULT_POSTGRES_URL}, or "
        "$PERDURE_BENCH_POSTGRES_URL); every figure gets a schema bench_<hex>, dropped after",
    )
    parser.add_argument(
        "--workers",
        type=_worker_counts,
        default=[1, 2, 4],
        help="worker process counts of the multi-process figure (default 1,2,4)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this figure (repeatable); the floor is always measured; "
        "'queue' (queues with concurrency=50 against no queue) runs only when named",
    )
    parser.add_argument("--dir", default=None, help="parent of the temporary SQLite databases")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary databases, schemas and logs"
    )
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
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run this process on one core and each worker process on the next, round "
        "robin (as taskset -c N would; the database server is left alone)",
    )
    args = parser.parse_args(argv)
    if args.pin:
        log(f"pinned: this process on core {pin_this_process()}, workers round robin")
    counts = QUICK if args.quick else FULL
    only = set(args.only or [name for name in SECTIONS if name not in OPT_IN])
    complete = not args.quick and args.only is None
    settle_for = args.settle if args.settle is not None else (30.0 if complete else 0.0)
    stores = list(dict.fromkeys(args.store or STORES))
    explicit = bool(args.store)

    results: dict[str, Any] = {
        "benchmark": "perdure benchmark (../shared/BENCHMARK.md)",
        "command": " ".join([Path(sys.executable).name, "bench/run.py", *(argv or sys.argv[1:])]),
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "counts": counts,
        "machine": machine(),
        # Settings for the worker processes' App (an experiment; unset in the benchmark).
        "worker_app_settings": os.environ.get("PERDURE_BENCH_APP_SETTINGS"),
        # The cores of a --pin run (this process on the first), else [].
        "pinned_cores": pinned(),
        "stores": {},
    }
    logs = Path(tempfile.mkdtemp(prefix="perdure-bench-logs-", dir=args.dir))
    capture_logs(logs / "bench.log")
    started = time.perf_counter()
    whole = Load()
    try:
        if settle_for > 0:
            log(f"waiting up to {settle_for:.0f} s for the machine to be quiet ...")
            results["settle"] = settle(settle_for)
            if not results["settle"]["quiet"]:
                log(
                    f"  still busy: other processes use "
                    f"{results['settle']['foreign_cores']:.2f} cores; measuring anyway"
                )
        for store in stores:
            ws: Workspace
            if store == "sqlite":
                ws = SQLiteWorkspace(args.dir, args.synchronous, args.keep)
            else:
                try:
                    ws = PostgresWorkspace(args.postgres_url, args.keep)
                except Exception as exc:
                    if explicit:
                        raise
                    log(f"PostgreSQL skipped: cannot use {args.postgres_url}: {exc}")
                    results["stores"]["postgresql"] = {"skipped": str(exc)}
                    continue
            log(f"[{store}] {ws.title()}")
            try:
                results["stores"][store] = run_store(ws, counts, only, complete, args.workers, logs)
            finally:
                ws.close()
        results["foreign_cores"] = whole.foreign_cores()
        results["elapsed_s"] = time.perf_counter() - started
        if results["machine"]["src_modified"] is not None:
            # Other people may edit src/ while the benchmark runs (workers import it anew).
            results["src_modified_at_end"] = src_modified()
    finally:
        results["log_warnings"] = LOG_COUNT.count
        if args.keep or LOG_COUNT.count:
            log(
                f"{LOG_COUNT.count} warnings from perdure/psycopg in this process; "
                f"logs (bench.log and the workers') kept in {logs}"
            )
        else:
            shutil.rmtree(logs, ignore_errors=True)

    print_report(results, args.quick)

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, default=str, ensure_ascii=False) + "\n"
    output.write_text(text)
    if complete and output.resolve() == (RESULTS / "latest.json").resolve():
        for store, res in results["stores"].items():
            if "skipped" in res:
                continue
            name = f"sqlite-{args.synchronous}" if store == "sqlite" else "postgresql"
            single = {k: v for k, v in results.items() if k != "stores"}
            single["store"] = store
            single.update(res)
            (RESULTS / f"{name}.json").write_text(
                json.dumps(single, indent=2, default=str, ensure_ascii=False) + "\n"
            )
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

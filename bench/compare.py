"""Before/after: the benchmark of two revisions of perdure, on the same machine, in turns.

    .venv/bin/python bench/compare.py OLD_REV NEW_REV                # both stores, full
    .venv/bin/python bench/compare.py HEAD~1 HEAD --quick --store sqlite
    .venv/bin/python bench/compare.py main . --only steps --rounds 3   # .: src/ as it is
    make bench-compare OLD=main NEW=HEAD ARGS="--quick"

Each revision's ``src/`` is exported (``git archive REV src``) into a temporary folder, and
this checkout's benchmark harness (bench/run.py) measures it with ``PYTHONPATH`` pointing
at that copy only; the ``perdure worker`` processes it spawns import the same copy (see
bench/workers.py), and every run's ``perdure_path`` is checked. The harness uses only
perdure's public API (``App``, ``start``, ``@workflow``, ``@step``, handles), so it can drive
an older revision; its diagnostics of private internals (bench/probe.py) drop out quietly
where those are gone.

Both revisions see the same machine state as nearly as can be: every figure runs as its own
``bench/run.py --only FIGURE`` process, old and new one after the other, in an order that
alternates from figure to figure (old-new, new-old, ...), each with the floor commits
measured right before and after it. ``--rounds N`` repeats the whole sequence and reports
medians. A figure that fails on one side is reported as failed and the rest goes on.

Prints a markdown table per store (each figure old, new, new/old, new/old with each side
in its own floor commits, and the floor commit each run measured) and writes
bench/results/compare-<old>-<new>.json (short commit hashes).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # not bench/ itself: its modules would shadow top-level ones
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import compare_table  # noqa: E402
from bench.common import log  # noqa: E402
from bench.cpu import settle  # noqa: E402
from bench.settings import DEFAULT_POSTGRES_URL, RESULTS, SECTIONS, STORE_SECTIONS, STORES  # noqa: E402

#: The revision name that means this checkout's src/ as it is (uncommitted edits too).
WORKTREE = "."


@dataclass
class Revision:
    """One side of the comparison: a revision and the exported copy of its src/."""

    side: str  # "old" or "new"
    rev: str
    commit: str  # short hash, or "worktree"
    src: Path  # the folder holding the copy's perdure/


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def export(side: str, rev: str, into: Path) -> Revision:
    """Export ``rev``'s src/ into ``into/<side>/src`` (``.``: this checkout's src/ as is)."""
    target = into / side
    target.mkdir(parents=True)
    if rev == WORKTREE:
        shutil.copytree(ROOT / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__"))
        return Revision(side, rev, "worktree", target / "src")
    try:
        commit = _git("rev-parse", "--short", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"compare: {rev!r} is not a revision of {ROOT}: {exc.stderr}") from exc
    # git archive REV src | tar -x -C target
    archive = subprocess.Popen(["git", "archive", commit, "src"], cwd=ROOT, stdout=subprocess.PIPE)
    assert archive.stdout is not None
    subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise SystemExit(f"compare: git archive {commit} src failed")
    if not (target / "src" / "perdure" / "__init__.py").exists():
        raise SystemExit(f"compare: {rev} ({commit}) has no src/perdure")
    return Revision(side, rev, commit, target / "src")


def _env(revision: Revision) -> dict[str, str]:
    env = dict(os.environ)
    # Only the copy: not this checkout's src/ nor anything else put on the path before.
    env["PYTHONPATH"] = str(revision.src)
    env["PERDURE_BENCH_REVISION"] = f"{revision.rev} = {revision.commit}"
    return env


def check_import(revision: Revision) -> str:
    """The perdure that ``import perdure`` finds with the copy on the path: must be the copy."""
    found = subprocess.run(
        [sys.executable, "-c", "import perdure; print(perdure.__file__)"],
        cwd=ROOT,
        env=_env(revision),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(revision.src.resolve()):
        raise SystemExit(
            f"compare: with PYTHONPATH={revision.src}, `import perdure` finds {found}: "
            "something on the path wins over PYTHONPATH"
        )
    return found


def postgres_reachable(url: str) -> str | None:
    """None if the PostgreSQL database accepts a connection, else why not."""
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=5).close()
    except Exception as exc:  # noqa: BLE001 - any failure means: skip the store
        return str(exc)
    return None


def run_figure(
    revision: Revision, store: str, section: str, passthrough: list[str], out_dir: Path
) -> dict[str, Any]:
    """One ``bench/run.py --only SECTION`` of one revision; its results of the store, or
    ``{"failed": ...}``."""
    name = f"{revision.side}-{store}-{section}"
    output = out_dir / f"{name}.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--store",
        store,
        "--only",
        section,
        "--settle",
        "0",
        "--output",
        str(output),
        *passthrough,
    ]
    t0 = time.perf_counter()
    with open(out_dir / f"{name}.log", "wb") as out:
        done = subprocess.run(
            command, cwd=ROOT, env=_env(revision), stdout=out, stderr=subprocess.STDOUT
        )
    elapsed = time.perf_counter() - t0
    if done.returncode != 0 or not output.exists():
        tail = (out_dir / f"{name}.log").read_text(errors="replace")[-1500:]
        log(f"    {revision.side} {revision.commit}: FAILED (exit {done.returncode})\n{tail}")
        return {"failed": f"exit {done.returncode}", "log_tail": tail}
    results = json.loads(output.read_text())
    measured = Path(results["machine"]["perdure_path"]).resolve()
    if not measured.is_relative_to(revision.src.resolve()):
        raise SystemExit(f"compare: the {revision.side} run measured {measured}, not the copy")
    res = results["stores"][store]
    if "skipped" in res or section not in res:
        log(f"    {revision.side} {revision.commit}: no result ({res.get('skipped', '?')})")
        return {"failed": res.get("skipped", "no result")}
    log(f"    {revision.side} {revision.commit}: {elapsed:.1f} s")
    return {
        "section": res[section],
        "floor_commit_us": res["floor"]["commit_us"],
        "machine": results["machine"],
        "title": res["title"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/compare.py",
        description="perdure's benchmark of two revisions, in turns on the same machine",
    )
    parser.add_argument("old", help="the revision before (git rev; '.' = this src/ as is)")
    parser.add_argument("new", help="the revision after (git rev; '.' = this src/ as is)")
    parser.add_argument(
        "--store", action="append", choices=STORES, help="this store (repeatable); default both"
    )
    parser.add_argument("--quick", action="store_true", help="reduced counts")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="only this figure (repeatable)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the interleaved sequence; medians"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="before each figure, wait up to this many seconds for other processes to go "
        "quiet (default 0)",
    )
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PERDURE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    parser.add_argument("--workers", default=None, help="as bench/run.py --workers")
    parser.add_argument("--pin", action="store_true", help="as bench/run.py --pin (both sides)")
    parser.add_argument("--dir", default=None, help="parent of the temporary folders")
    parser.add_argument("--keep", action="store_true", help="keep the copies, logs and JSON")
    parser.add_argument("--output", default=None, help="default bench/results/compare-*.json")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    passthrough = ["--synchronous", args.synchronous, "--postgres-url", args.postgres_url]
    if args.quick:
        passthrough.append("--quick")
    if args.workers:
        passthrough += ["--workers", args.workers]
    if args.pin:
        passthrough.append("--pin")
    stores = list(dict.fromkeys(args.store or STORES))
    skipped: dict[str, str] = {}
    if "postgresql" in stores and (why := postgres_reachable(args.postgres_url)):
        if args.store:
            raise SystemExit(f"compare: cannot use {args.postgres_url}: {why}")
        log(f"PostgreSQL skipped: cannot use {args.postgres_url}: {why}")
        skipped["postgresql"] = why
        stores.remove("postgresql")
    sections = [s for s in SECTIONS if s in set(args.only or SECTIONS)]

    work = Path(tempfile.mkdtemp(prefix="perdure-compare-", dir=args.dir))
    failures = 0
    started = time.perf_counter()
    try:
        old = export("old", args.old, work)
        new = export("new", args.new, work)
        for revision in (old, new):
            log(f"{revision.side}: {revision.rev} = {revision.commit}: {check_import(revision)}")
        out_dir = work / "runs"
        out_dir.mkdir()
        # runs[side][store][section] = the section's results, one per round
        runs: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {"old": {}, "new": {}}
        floors: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
        titles: dict[str, str] = {}
        machine: dict[str, Any] = {}
        turn = 0
        for round_ in range(args.rounds):
            for store in stores:
                for section in sections:
                    if store not in STORE_SECTIONS.get(section, STORES):
                        continue
                    # Alternate who goes first, so that a drift of the machine over the
                    # sequence does not always favour the same side.
                    order = (old, new) if turn % 2 == 0 else (new, old)
                    turn += 1
                    log(f"[{store}] {section} (round {round_ + 1} of {args.rounds})")
                    if args.settle > 0:
                        quiet = settle(args.settle)
                        if not quiet["quiet"]:
                            log(f"    busy: others use {quiet['foreign_cores']:.2f} cores")
                    for revision in order:
                        got = run_figure(revision, store, section, passthrough, out_dir)
                        if "failed" in got:
                            failures += 1
                            continue
                        side = runs[revision.side].setdefault(store, {})
                        side.setdefault(section, []).append(got["section"])
                        floors[revision.side].setdefault(store, []).append(got["floor_commit_us"])
                        titles.setdefault(store, got["title"])
                        machine = machine or got["machine"]
    finally:
        if failures or args.keep:
            log(f"copies, logs and each run's JSON kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    labels = {side: r.commit for side, r in (("old", old), ("new", new))}
    report: dict[str, Any] = {
        "benchmark": "perdure before/after (bench/compare.py)",
        "command": " ".join(["bench/compare.py", *(argv if argv is not None else sys.argv[1:])]),
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "old": {"rev": old.rev, "commit": old.commit},
        "new": {"rev": new.rev, "commit": new.commit},
        "quick": args.quick,
        "rounds": args.rounds,
        "machine": machine,
        "failures": failures,
        "elapsed_s": time.perf_counter() - started,
        "stores": {},
    }
    print(
        f"\n## perdure before/after: {old.rev} ({old.commit}) -> {new.rev} ({new.commit})"
        f"{' (quick)' if args.quick else ''}, {args.rounds} round(s)\n"
    )
    for store in stores:
        store_rows = compare_table.rows(runs["old"].get(store, {}), runs["new"].get(store, {}))
        floor = {side: floors[side].get(store, []) for side in ("old", "new")}
        report["stores"][store] = {
            "title": titles.get(store, store),
            "rows": store_rows,
            "floor_commit_us": floor,
            "runs": {side: runs[side].get(store, {}) for side in ("old", "new")},
        }
        for line in compare_table.markdown(
            store_rows, titles.get(store, store), labels["old"], labels["new"]
        ):
            print(line)
        print(
            "\nfloor commit of each run (µs, median of its start and bracket floors): "
            f"old {', '.join(f'{f:.0f}' for f in floor['old']) or '-'}; "
            f"new {', '.join(f'{f:.0f}' for f in floor['new']) or '-'}\n"
        )
    for store, why in skipped.items():
        report["stores"][store] = {"skipped": why}
        print(f"{store}: skipped ({why})\n")
    print(
        "new/old in floors: each side divided by (latency) or multiplied by (throughput) the "
        "floor commit measured around it; change: judged on new/old.\nother cores: CPU "
        "that other processes used during the figure (a side measured on a busier machine "
        "is pessimistic; see --settle, --rounds).\n"
        f"{failures} failed run(s); {report['elapsed_s']:.0f} s in all"
    )
    output = Path(args.output or RESULTS / f"compare-{old.commit}-{new.commit}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str, ensure_ascii=False) + "\n")
    print(f"results written to {output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

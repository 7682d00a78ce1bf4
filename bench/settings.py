"""The benchmark's constants: where things are, the counts of a full and a quick run, the
figures (sections) and which stores have them."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
STORES = ("sqlite", "postgresql")

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
    "mp_n": 2000,
    "queue_n": 2000,
    "mp_repeats": 1,
    "waiting": 10_000,
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
    "mp_n": 300,
    "queue_n": 300,
    "mp_repeats": 1,
    "waiting": 1000,
}

SECTIONS = (
    "sequential",
    "steps",
    "throughput_sync",
    "throughput_sync_gather",
    "throughput_async",
    "throughput_async_loop",
    "recovery",
    "waiting",
    "multiprocess",
    "queue",
)
#: Figures that run only when asked for (``--only queue``).
OPT_IN = ("queue",)
#: Figures that only one store has.
STORE_SECTIONS = {"multiprocess": ("postgresql",)}
#: A figure during which the PostgreSQL server restarted is measured again, this often.
MAX_RESTARTS = 5
#: Seconds to wait after a restart before measuring again.
RESTART_PAUSE = 3.0

"""``perdure worker bench.workloads:app`` subprocesses of the recovery, waiting-cost and
multi-process figures, and the submission of many workflows from a client."""

from __future__ import annotations

import asyncio
import compileall
import datetime as _dt
import functools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import perdure
from bench.pinning import worker_prefix
from bench.settings import ROOT


def perdure_root() -> Path:
    """The folder the perdure this process imported is in (e.g. ``src``, or an export of a
    revision's ``src``)."""
    return Path(perdure.__file__).resolve().parent.parent


@functools.cache
def _compiled(root: Path) -> None:
    """Compile the measured perdure's modules once, as an installed package is: a worker
    started with PYTHONDONTWRITEBYTECODE (as in CI and this benchmark's machines) would
    otherwise compile every module from source at each start, a cost no deployment pays
    and one that grows with the number of modules (the recovery figure times worker B
    from its process start). Both sides of a comparison are compiled the same way."""
    compileall.compile_dir(root / "perdure", quiet=1)
    compileall.compile_dir(ROOT / "bench", quiet=1, maxlevels=0)


def _worker_command() -> list[str]:
    script = Path(sys.executable).with_name("perdure")
    if script.exists():
        return [str(script), "worker", "bench.workloads:app"]
    return [sys.executable, "-m", "perdure", "worker", "bench.workloads:app"]


def spawn_worker(
    url: str, log_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``perdure worker bench.workloads:app`` on ``url``, its output to ``log_path`` (on a
    core of its own with ``--pin``: ``bench/pinning.py``)."""
    _compiled(perdure_root())
    env = {**os.environ, "PERDURE_DATABASE_URL": url, **(extra_env or {})}
    # The worker must import the same perdure as this process (the one measured, maybe an
    # exported revision), and the benchmark's workloads from this checkout.
    paths = (str(ROOT), str(perdure_root()), env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            [*worker_prefix(), *_worker_command()],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def first_log_time(log_path: Path) -> float | None:
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


def submit(app: Any, fn: Any, n: int, prefix: str) -> None:
    """Start n workflows at once (``gather(start_async)``) and return once all are
    recorded; their ids are ``<prefix>-<i>`` arguments."""

    async def main() -> None:
        await asyncio.gather(*(app.start_async(fn, f"{prefix}-{i}") for i in range(n)))

    asyncio.run(main())

"""The machine a run measured on, and which perdure it imported."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.settings import ROOT


def filesystem(path: Path) -> dict[str, str]:
    fs = {"mount": "?", "device": "?", "type": "?", "options": "?"}
    try:
        best = ""
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind, options = line.split()[:4]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best = mount
                fs = {"mount": mount, "device": device, "type": kind, "options": options}
    except OSError:
        pass
    return fs


def src_modified() -> bool:
    try:
        return bool(
            subprocess.run(
                ["git", "status", "--porcelain", "src"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        )
    except OSError:
        return False


def _exported(head: str) -> str:
    """What to call a perdure that is not this checkout's src/: the revision bench/compare.py
    exported it from (it says so in ``PERDURE_BENCH_REVISION``), else unknown."""
    revision = os.environ.get("PERDURE_BENCH_REVISION")
    if revision:
        return f"{revision} (exported; this checkout's HEAD is {head})"
    return f"? (not this checkout's src/; HEAD is {head})"


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
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
    except OSError:
        commit = "?"
    import perdure

    # The perdure measured: this checkout's src/ (as installed in the venv), or another
    # copy put first on PYTHONPATH (e.g. an export of a commit: git archive HEAD src).
    path = Path(perdure.__file__).resolve().parent
    local = path == (ROOT / "src" / "perdure").resolve()
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        loadavg = []
    try:
        import psycopg

        psycopg_version = f"{psycopg.__version__} ({psycopg.pq.__impl__})"
    except ImportError:
        psycopg_version = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "psycopg": psycopg_version,
        "platform": platform.platform(),
        "perdure_path": str(path),
        "perdure_commit": commit if local else _exported(commit),
        "src_modified": src_modified() if local else None,
        "loadavg_at_start": loadavg,
    }

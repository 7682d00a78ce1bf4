"""``make demo`` runs to the end, tells the story it should, and leaves no process behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo" / "run_demo.py"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # the PID was reused by another user's process
        return True
    return False


@pytest.mark.slow
def test_demo_kills_and_resumes_the_checkout() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERDURE_", "DEMO_"))}
    done = subprocess.run(
        [sys.executable, str(DEMO)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    out = done.stdout
    assert done.returncode == 0, f"demo failed:\n{out}\n{done.stderr}"

    pids = [int(pid) for pid in re.findall(r"Started worker \d \(pid (\d+)\)", out)]
    assert len(pids) == 2, out
    assert all(_gone(pid) for pid in pids), f"a worker is still running: {pids}"

    assert f"Killing worker 1 (pid {pids[0]}) with SIGKILL" in out
    assert "Worker 1 killed (exit code -9)" in out
    assert "recovering workflow" in out
    assert "Each one is resumed" in out
    assert re.search(r"order-\d +RUNNING +\d of 4 steps", out), out
    assert "All 5 orders completed" in out
    for n in range(1, 6):
        assert re.search(rf"order-{n}: 1 charge \(asked", out), out
    assert "-> one charge per order (5 charges for 5 orders)" in out
    assert re.search(r"exactly\s+those in flight when worker 1 was killed", out), out
    assert "did not run again" in out
    assert "Worker 2 exited with code 0" in out
    assert "DEMO FAILED" not in out

"""The ``perdure`` command as a process: a worker started before its database waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent


@pytest.mark.slow
def test_worker_waits_for_an_unreachable_database_and_stops_cleanly() -> None:
    pytest.importorskip("psycopg")
    env = dict(os.environ)
    # Nothing listens on port 1: the server is not up (yet).
    env["PERDURE_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/test"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen(
        [sys.executable, "-m", "perdure", "worker", "crash_app:app"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = []
        deadline = time.monotonic() + 20
        while len([line for line in lines if "database unavailable" in line]) < 2:
            assert time.monotonic() < deadline, "".join(lines)
            assert proc.poll() is None, "the worker exited instead of waiting:\n" + "".join(lines)
            lines.append(proc.stderr.readline())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

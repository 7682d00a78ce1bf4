"""Worker processes for the examples: ``python -m perdure worker MODULE:app`` subprocesses
that an example can SIGKILL, and that are always cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import perdure

#: The folder this process imports perdure from.
PERDURE_SOURCE = str(Path(perdure.__file__).resolve().parent.parent)


class Worker:
    """One ``perdure worker`` subprocess; its output goes to ``worker-N.log``."""

    def __init__(
        self, number: int, spec: str, code_dir: Path, workdir: Path, env: Mapping[str, str]
    ) -> None:
        self.number = number
        self.log_path = workdir / f"worker-{number}.log"
        env = {**os.environ, **env}
        # The worker imports the example's module by name, and the perdure this process
        # uses (PYTHONPATH may point at a source tree, even relative to a folder that is
        # not the worker's: its absolute folder goes first).
        env["PYTHONPATH"] = os.pathsep.join(
            [str(code_dir), PERDURE_SOURCE, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "perdure", "worker", spec],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C meant for the example doesn't reach it,
                # the example ends it itself.
                start_new_session=True,
            )
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the worker says it runs (its executor started)."""
        deadline = time.monotonic() + timeout
        while "perdure worker running" not in self.log():
            if not self.alive():
                raise RuntimeError(f"worker {self.number} exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.number} did not start:\n{self.log()}")
            time.sleep(0.02)

    def kill(self) -> int:
        """SIGKILL, as a crash or an out-of-memory kill would; returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM: the worker drains gracefully and exits; returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.kill()


class Workers:
    """Starts workers for one app; as a context manager, kills every one still running on
    exit (also on error or Ctrl-C), so that no process outlives the example.

    ``spec`` is the app's ``module:attribute``, importable from ``code_dir``; the workers
    run in ``workdir``, with this process's environment updated with ``env``.
    """

    def __init__(
        self, spec: str, code_dir: Path, workdir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.spec = spec
        self.code_dir = code_dir
        self.workdir = workdir
        self.env = dict(env or {})
        self.started: list[Worker] = []

    def start(self) -> Worker:
        worker = Worker(len(self.started) + 1, self.spec, self.code_dir, self.workdir, self.env)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:
            worker.kill()

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

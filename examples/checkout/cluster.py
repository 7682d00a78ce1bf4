"""The checkout's processes: four services and the workers, started, killed and cleaned up.

``run_demo.py`` and ``tests/test_checkout.py`` both drive the scenario through a
``Cluster``. Every process it starts runs in its own session (its own process
group), so that a Ctrl-C to the demo doesn't reach it and ``close()`` can kill it
with everything it may have started. Their output is handed line by line to a
callback, ``on_line(name, line)``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx

HERE = Path(__file__).resolve().parent

#: The services (``python -m services NAME``), in the order a checkout calls them. This
#: module imports nothing from the example, so that a test can load it by its path.
SERVICES = ("intake", "payment", "inventory", "confirmation")

#: Receives every line that a child process prints: (the child's name, the line).
LineHandler = Callable[[str, str], None]


class ClusterError(Exception):
    """A process did not start, stop or answer as expected."""


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def refuses_connections(port: int) -> bool:
    """Whether 127.0.0.1:``port`` answers a connection attempt with a refusal."""
    with socket.socket() as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


class Child:
    """One child process in its own session, its stdout and stderr read by threads."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], on_line: LineHandler
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.on_line = on_line
        self.process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self._output: list[str] = []
        self._new_output = threading.Condition()

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            cwd=HERE,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str]) -> None:
        with stream:  # closed at the end of the output, when the process has exited
            for line in stream:
                self.line(line.rstrip("\n"))

    def line(self, line: str) -> None:
        with self._new_output:
            self._output.append(line)
            self._new_output.notify_all()
        self.on_line(self.name, line)

    def wait_for_output(self, text: str, timeout: float = 30.0) -> str:
        """The first line of output that contains ``text``, as soon as it is printed.

        Raises ``ClusterError`` if the process exits or ``timeout`` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        with self._new_output:
            while True:
                found = next((line for line in self._output if text in line), None)
                if found is not None:
                    return found
                if not self.alive:
                    raise ClusterError(f"{self.name} exited before printing {text!r}")
                if time.monotonic() > deadline:
                    raise ClusterError(f"{self.name} did not print {text!r} in {timeout:.0f} s")
                self._new_output.wait(0.05)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ClusterError(f"{self.name} was never started")
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL the process group, reap the process; returns its exit code."""
        if self.process is None:
            raise ClusterError(f"{self.name} was never started")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        code = self.process.wait()
        self._join()
        return code

    def terminate(self, timeout: float) -> int:
        """SIGTERM the process and wait for it to exit (SIGKILL after ``timeout``)."""
        if self.process is None:
            raise ClusterError(f"{self.name} was never started")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ClusterError(
                    f"{self.name} did not exit within {timeout:.0f} s of SIGTERM"
                ) from None
        # Anything the process started in its group goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._join()
        return self.process.returncode

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)


class Service(Child):
    """One service (``python -m services NAME``) on its own port and state directory."""

    def __init__(
        self,
        name: str,
        state_dir: Path,
        env: dict[str, str],
        on_line: LineHandler,
        latency: float = 0.0,
    ) -> None:
        super().__init__(name, [], env, on_line)
        self.state_dir = state_dir
        self.latency = latency
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_on(self, port: int, timeout: float = 30.0) -> None:
        """Start serving on ``port``; returns once ``GET /health`` answers."""
        self.port = port
        self.argv = [
            sys.executable,
            "-m",
            "services",
            self.name,
            "--port",
            str(port),
            "--state-dir",
            str(self.state_dir),
            "--latency",
            str(self.latency),
        ]
        self.start()
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if not self.alive:
                raise ClusterError(f"{self.name} exited at start (port {port} taken?)")
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.name} did not answer on port {port} in {timeout:.0f} s")
            time.sleep(0.05)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def get(self, path: str) -> Any:
        """The JSON answer of ``GET path`` (the service's records)."""
        response = httpx.get(f"{self.url}{path}", timeout=10.0)
        response.raise_for_status()
        return response.json()


class Worker(Child):
    """A ``python -m perdure worker shop:app`` process."""

    def __init__(self, number: int, env: dict[str, str], on_line: LineHandler) -> None:
        argv = [sys.executable, "-m", "perdure", "worker", "shop:app"]
        super().__init__(f"worker {number}", argv, env, on_line)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once the worker runs (it has recovered what it found to recover)."""
        self.wait_for_output("perdure worker running", timeout)


class Cluster:
    """The services and workers of one run, all in one temporary ``workdir``.

    ``database_url`` is perdure's database (``PERDURE_DATABASE_URL`` of the workers);
    ``latency`` gives some services a visible response time (service name -> seconds).
    """

    def __init__(
        self,
        workdir: Path,
        database_url: str,
        on_line: LineHandler,
        latency: dict[str, float] | None = None,
    ) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.on_line = on_line
        self.latency = latency or {}
        self.services: dict[str, Service] = {}
        self.workers: list[Worker] = []
        self._children: list[Child] = []  # every process started, for close()

    def env(self) -> dict[str, str]:
        """The environment of the workers: the database, and where the services are."""
        env = self._base_env()
        for name, service in self.services.items():
            env[f"CHECKOUT_{name.upper()}_URL"] = service.url
        return env

    def _base_env(self) -> dict[str, str]:
        # Nothing of the caller's own perdure or checkout settings leaks into the children.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PERDURE_", "CHECKOUT_"))}
        env["PERDURE_DATABASE_URL"] = self.database_url
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_services(self, timeout: float = 30.0) -> None:
        """Start the four services at once, each on a free port; return when all answer."""
        state_dir = self.workdir / "services"
        state_dir.mkdir(exist_ok=True)
        env = self._base_env()
        for name in SERVICES:
            latency = self.latency.get(name, 0.0)
            self.services[name] = Service(name, state_dir, env, self.on_line, latency)
        errors: list[BaseException] = []

        def start(service: Service) -> None:
            try:
                self._start_service(service, timeout)
            except BaseException as exc:
                errors.append(exc)

        # In parallel: each takes a second or so to import FastAPI.
        threads = [threading.Thread(target=start, args=(s,)) for s in self.services.values()]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        finally:
            # Interrupted (Ctrl-C): still wait for the starts, so that close() finds and
            # kills every process they started.
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]

    def _start_service(self, service: Service, timeout: float) -> None:
        self._children.append(service)
        # Another process may take the free port before the service binds it: then the
        # service exits, and starts again on another port.
        for attempt in range(3):
            try:
                service.start_on(free_port(), timeout)
                return
            except ClusterError:
                if service.alive or attempt == 2:
                    raise

    def restart(self, name: str, timeout: float = 30.0) -> Service:
        """Start a stopped service again, on the same port and with the same state."""
        old = self.services[name]
        if old.alive:
            raise ClusterError(f"{name} is still running")
        service = Service(name, old.state_dir, old.env, self.on_line, old.latency)
        self._children.append(service)
        service.start_on(old.port, timeout)
        self.services[name] = service
        return service

    def start_worker(self) -> Worker:
        """Start a worker (it reads the services' URLs from its environment)."""
        worker = Worker(len(self.workers) + 1, self.env(), self.on_line)
        self.workers.append(worker)
        self._children.append(worker)
        worker.start()
        return worker

    def pids(self) -> list[int]:
        """The PIDs of every process this cluster started."""
        return [child.pid for child in self._children if child.process is not None]

    def close(self) -> None:
        """Kill every process still running, with its process group, and reap it.

        No graceful stop here: this is the way out after a failure or an interruption,
        and a worker asked to drain could take its whole grace period.
        """
        for child in self._children:
            if child.process is not None:
                child.kill()


@contextlib.contextmanager
def cluster(
    workdir: Path,
    database_url: str,
    on_line: LineHandler,
    latency: dict[str, float] | None = None,
) -> Iterator[Cluster]:
    """A ``Cluster`` whose processes are all stopped on the way out, also on errors."""
    running = Cluster(workdir, database_url, on_line, latency)
    try:
        yield running
    finally:
        running.close()

"""A PostgreSQL server of a test's own that becomes a hot standby (a read replica's
state): written to as a primary, then restarted in recovery, where it answers reads
and refuses every write and ``LISTEN``, as a replica does.

Made with the local server's own binaries (``pg_config --bindir``: ``initdb``,
``pg_ctl``) in a temporary folder, on a free port of 127.0.0.1, trust authentication;
run as the ``postgres`` user when the tests run as root (PostgreSQL refuses root).
Nothing outside the folder is touched: not the test server, not its configuration.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _bindir() -> Path | None:
    try:
        found = subprocess.run(
            ["pg_config", "--bindir"], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    folder = Path(found)
    return folder if (folder / "initdb").exists() and (folder / "pg_ctl").exists() else None


def unavailable() -> str | None:
    """Why a server of the test's own cannot be made here (None if it can)."""
    if _bindir() is None:
        return "no PostgreSQL server binaries (pg_config --bindir with initdb and pg_ctl)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to become the postgres user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class StandbyServer:
    """``url`` reaches the server; ``to_standby()`` restarts it in recovery."""

    def __init__(self) -> None:
        bindir = _bindir()
        assert bindir is not None, unavailable()
        self._bin = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="perdure-standby-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self._start()

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self._bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.folder / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)}: {done.stdout}{done.stderr}{tail}")

    def _start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c hot_standby=on"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                  "-w", "start")  # fmt: skip

    def to_standby(self) -> None:
        """Stop the server and start it again in recovery (``standby.signal``, no primary
        to follow): its data stays as it was, readable, and every write is refused."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        signal = self.data / "standby.signal"
        signal.touch()
        if os.geteuid() == 0:
            shutil.chown(signal, "postgres")
        self._start()

    def close(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

"""CPU time from /proc: of a process, of the local PostgreSQL server, of the other
processes on the machine (the load a figure was measured under), and of this process
over a block of work."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat(pid: int | str) -> tuple[int, float, float] | None:
    """(ppid, own CPU s, waited-for children's CPU s) of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the ")": state ppid ... utime(12th) stime cutime cstime.
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime) / _TICK, (cutime + cstime) / _TICK


def process_cpu(pid: int) -> float | None:
    """CPU seconds a process has used (not its children)."""
    stat = proc_stat(pid)
    return None if stat is None else stat[1]


class ServerCPU:
    """CPU time of a local PostgreSQL server: the postmaster, its waited-for children
    (backends that exited) and its live children (backends, WAL writer, ...). It counts
    every session of the server, not only the benchmark's.

    When the server restarts (a new postmaster), the count starts again from the new
    one: ``generation`` changes, and a difference across it means nothing."""

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster
        self.generation = 0

    @staticmethod
    def _comm(pid: int | str) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""

    def _relocate(self) -> None:
        """Find the new postmaster: a ``postgres`` process whose parent is not one."""
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and self._comm(entry.name) == "postgres":
                stat = proc_stat(entry.name)
                if stat is not None and self._comm(stat[0]) != "postgres":
                    self.postmaster = int(entry.name)
                    self.generation += 1
                    return

    def seconds(self) -> float:
        if self._comm(self.postmaster) != "postgres":
            self._relocate()
        total = 0.0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            stat = proc_stat(entry.name)
            if stat is None:
                continue
            ppid, own, children = stat
            if ppid == self.postmaster or int(entry.name) == self.postmaster:
                total += own + children
        return total


class Load:
    """CPU that *other* processes used on this machine while a block ran, in cores.

    The machine's busy time (/proc/stat) minus this process's and its waited-for
    children's CPU time, and minus the local PostgreSQL server's (``server``) when the
    figure uses it: a number well above 0 means the figure was measured on a busy
    machine and is pessimistic.
    """

    def __init__(self, server: ServerCPU | None = None) -> None:
        self.server = server
        self.wall0 = time.perf_counter()
        self.busy0 = self._busy()
        self.own0 = self._own()
        self.server0 = server.seconds() if server else 0.0
        self.generation = server.generation if server else 0

    @staticmethod
    def _busy() -> float:
        try:
            with open("/proc/stat") as stat:
                fields = [int(x) for x in stat.readline().split()[1:9]]
        except (OSError, ValueError):
            return float("nan")
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) / _TICK

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def server_seconds(self) -> float:
        """The server's CPU seconds since the start (0 without a local server, NaN if it
        restarted meanwhile)."""
        if self.server is None:
            return 0.0
        now = self.server.seconds()
        return now - self.server0 if self.server.generation == self.generation else float("nan")

    def foreign_cores(self) -> float:
        wall = time.perf_counter() - self.wall0
        server = self.server_seconds()
        if server != server:  # NaN: the server restarted, its CPU is unknown
            server = 0.0
        foreign = (self._busy() - self.busy0) - (self._own() - self.own0) - server
        return max(0.0, foreign / wall) if wall > 0 else 0.0


def settle(max_wait: float, threshold: float = 0.15) -> dict[str, Any]:
    """Wait (at most ``max_wait`` s) until other processes use under ``threshold`` cores
    for two half-second samples in a row."""
    start = time.monotonic()
    quiet = 0
    foreign = float("nan")
    while time.monotonic() - start < max_wait:
        load = Load()
        time.sleep(0.5)
        foreign = load.foreign_cores()
        quiet = quiet + 1 if foreign < threshold else 0
        if quiet >= 2:
            break
    return {"waited_s": time.monotonic() - start, "foreign_cores": foreign, "quiet": quiet >= 2}


class HasServer(Protocol):
    """A workspace: its database server's CPU, when the server is local (else None)."""

    @property
    def server_cpu(self) -> ServerCPU | None: ...


class CPU:
    """This process's CPU time and the database server's over a block (per unit of work)."""

    def __init__(self, ws: HasServer) -> None:
        self.server = ws.server_cpu
        self.own0 = time.process_time()
        self.server0 = self.server.seconds() if self.server else None
        self.generation = self.server.generation if self.server else 0

    def stop(self, units: int) -> dict[str, float | None]:
        own = time.process_time() - self.own0
        server = None
        if self.server is not None and self.server0 is not None:
            now = self.server.seconds()
            if self.server.generation == self.generation:
                server = (now - self.server0) * 1000 / units
        return {"cpu_ms": own * 1000 / units, "server_cpu_ms": server, "cpu_s": own}

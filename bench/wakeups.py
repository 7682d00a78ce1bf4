"""What a wake-up between two threads costs, on one core and across cores
(``bench/explain.py wakeups``; docs/performance.md, "One core per worker process").

A synchronous workflow waits for each step record's commit on a ``Future`` that the
writer resolves from its own thread, and the writer resolves a whole batch of them at
once. Two shapes of that, each measured with the threads left to the scheduler, all on
one core, and forced onto different cores:

- ping-pong: two threads hand a ``Future`` back and forth (one wake-up each way);
- fan-out: one thread resolves the futures that ``width`` threads wait on, as the writer
  does a batch, and waits until each has answered on a future of its own.

Printed: wall and process CPU per wake-up (CPU counts both threads and the kernel).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future


def _pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


def _ping_pong(rounds: int, cores: tuple[int | None, int | None]) -> None:
    ping: list[Future[None]] = [Future() for _ in range(rounds)]
    pong: list[Future[None]] = [Future() for _ in range(rounds)]

    def other() -> None:
        _pin(cores[1])
        for i in range(rounds):
            ping[i].result()
            pong[i].set_result(None)

    thread = threading.Thread(target=other)
    thread.start()
    _pin(cores[0])
    for i in range(rounds):
        ping[i].set_result(None)
        pong[i].result()
    thread.join()


def _fan_out(rounds: int, width: int, cores: tuple[int | None, int | None]) -> None:
    go: list[list[Future[None]]] = [[Future() for _ in range(width)] for _ in range(rounds)]
    back: list[list[Future[None]]] = [[Future() for _ in range(width)] for _ in range(rounds)]

    def waiter(k: int) -> None:
        _pin(cores[1])
        for i in range(rounds):
            go[i][k].result()
            back[i][k].set_result(None)

    threads = [threading.Thread(target=waiter, args=(k,)) for k in range(width)]
    for thread in threads:
        thread.start()
    _pin(cores[0])
    for i in range(rounds):
        for future in go[i]:
            future.set_result(None)
        for future in back[i]:
            future.result()
    for thread in threads:
        thread.join()


def _timed(run: Callable[[], None], wakeups: int) -> tuple[float, float]:
    """Wall and process CPU µs per wake-up of ``run``, run in a thread of its own (so that
    pinning it leaves the caller's affinity alone)."""
    out: dict[str, float] = {}

    def body() -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        out["wall"], out["cpu"] = time.perf_counter() - t0, time.process_time() - c0

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return 1e6 * out["wall"] / wakeups, 1e6 * out["cpu"] / wakeups


def wakeups(rounds: int, width: int = 64) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    placements: dict[str, tuple[int | None, int | None]] = {"free": (None, None)}
    placements["one core"] = (allowed[0], allowed[0])
    if len(allowed) > 1:
        placements["two cores"] = (allowed[0], allowed[1])
    print(f"cores allowed: {allowed}; {rounds} rounds; fan-out width {width}")
    for name, cores in placements.items():
        wall, cpu = _timed(functools.partial(_ping_pong, rounds, cores), 2 * rounds)
        print(f"  ping-pong  {name:10s} {wall:6.1f} µs wall, {cpu:6.1f} µs CPU per wake-up")
    fan_rounds = max(1, rounds // width)
    for name, cores in placements.items():
        fan = functools.partial(_fan_out, fan_rounds, width, cores)
        wall, cpu = _timed(fan, 2 * width * fan_rounds)
        print(f"  fan-out    {name:10s} {wall:6.1f} µs wall, {cpu:6.1f} µs CPU per wake-up")

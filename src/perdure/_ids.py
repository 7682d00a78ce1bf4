"""New workflow IDs: UUIDs whose leading bits are the time (RFC 9562 version 7).

A workflow's ID is the primary key of its row and the leading column of its steps'
key. Random (version 4) IDs put each new row on a random page of those indexes: every
workflow started dirties pages of its own, which the store writes at each commit (the
WAL) and, in a table of millions of rows, reads from disk first. IDs that grow with
time land on the indexes' last pages, which the workflows of one commit share and
which stay in memory.

The random bits come from the operating system's source (``os.urandom``), read for
many IDs at once: each read is a system call during which CPython releases the
interpreter lock, and taking it back beside busy threads (workflows, the writer) cost
the starting thread ~180 µs of wall time per call on the benchmark's machine, in an
``app.start`` loop once per start.
"""

from __future__ import annotations

import os
import threading
import time

_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_BYTES = 10  # 80 bits: 12 for rand_a, 62 for rand_b
_IDS_PER_READ = 256


class _RandomBytes:
    """Bytes of ``os.urandom`` handed out ``_RAND_BYTES`` at a time, read in bulk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def take(self) -> bytes:
        with self._lock:
            if self._at >= len(self._pool):
                self._pool = os.urandom(_RAND_BYTES * _IDS_PER_READ)
                self._at = 0
            start = self._at
            self._at += _RAND_BYTES
            return self._pool[start : self._at]


_random_bytes = _RandomBytes()


def _after_fork_in_child() -> None:
    # A forked child must not hand out the bytes its parent hands out too (the same IDs
    # in two processes), nor inherit the lock held by a parent's thread that is gone.
    global _random_bytes
    _random_bytes = _RandomBytes()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def new_workflow_id() -> str:
    """A new random ID whose first 48 bits are the time in milliseconds (version 7)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(_random_bytes.take(), "big")
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | _VERSION_7
        | (rand >> 68) << 64
        | _VARIANT
        | rand & 0x3FFF_FFFF_FFFF_FFFF
    )
    # str(uuid.UUID(int=value)) without building the object (2 µs of a 3.5 µs call).
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

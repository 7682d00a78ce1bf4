"""Random bytes from the operating system's source, read in bulk.

``os.urandom`` is a system call during which CPython releases the interpreter lock; a
thread that makes it beside busy threads (workflows, the writer) then waits to take the
lock back: ~100-180 µs of wall time per call on the benchmark's machine, for 2-3 µs of
work. A workflow ID (each start), an encryption nonce (each sealed value) and
``perdure.uuid4()`` need a few bytes each, so they are handed out from one read of
``_READ`` bytes. The bytes are the OS's, unchanged and never handed out twice; a forked
child reads its own (it must not hand out the bytes its parent still holds: the same IDs
or nonces in two processes).
"""

from __future__ import annotations

import os
import threading

#: Bytes per read of the OS's source: 256 workflow IDs' worth.
_READ = 2560


class _Pool:
    """Bytes of one ``os.urandom`` read, handed out in order, read again when used up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._bytes):
                self._bytes = os.urandom(max(_READ, n))
                self._at = 0
            start = self._at
            self._at += n
            return self._bytes[start : self._at]


_pool = _Pool()


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's random source (as ``os.urandom(n)``)."""
    return _pool.take(n)


def _after_fork_in_child() -> None:
    # Also a new lock: a parent's thread that held it is gone in the child.
    global _pool
    _pool = _Pool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

"""New workflow IDs: UUIDs whose leading bits are the time (RFC 9562 version 7).

A workflow's ID is the primary key of its row and the leading column of its steps'
key. Random (version 4) IDs put each new row on a random page of those indexes: every
workflow started dirties pages of its own, which the store writes at each commit (the
WAL) and, in a table of millions of rows, reads from disk first. IDs that grow with
time land on the indexes' last pages, which the workflows of one commit share and
which stay in memory.

The random bits come from the operating system's source, read for many IDs at once
(``_entropy``).
"""

from __future__ import annotations

import time

from ._entropy import random_bytes

_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_BYTES = 10  # 80 bits: 12 for rand_a, 62 for rand_b


def new_workflow_id() -> str:
    """A new random ID whose first 48 bits are the time in milliseconds (version 7)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(random_bytes(_RAND_BYTES), "big")
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

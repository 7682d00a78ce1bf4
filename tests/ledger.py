"""Helpers shared by the process-level tests: the steps' ledger, and waiting on state."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parse_ledger(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The ledger's entries in the order written (each gets its index ``i``), and the
    fragments of lines cut short.

    A line is one ``os.write``, but the kernel may stop a write that crosses a page
    boundary between pages when SIGKILL arrives: the killed process's last line can be
    cut, and the next process's first line then follows it on the same line.
    """
    entries: list[dict[str, Any]] = []
    fragments: list[str] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            cut = line.rfind('{"t": ')
            if cut <= 0:
                raise
            fragments.append(line[:cut])
            entry = json.loads(line[cut:])
        entry["i"] = len(entries)
        entries.append(entry)
    return entries, fragments


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Every complete ledger line so far (a line being written is left out)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return parse_ledger(text[: text.rfind("\n") + 1])[0]


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, *, interval: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)

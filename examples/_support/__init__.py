"""What the examples share and perdure does not provide: narration, a scratch folder, local
HTTP servers and worker processes. None of it is needed to use perdure; it only keeps each
example's ``main.py`` about its pattern.

The examples import it as ``_support`` (``main.py`` puts ``examples/`` on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .processes import Worker, Workers
from .servers import LocalServer

__all__ = [
    "RUN",
    "JsonlTail",
    "LocalServer",
    "Worker",
    "Workers",
    "read_jsonl",
    "run_id",
    "say",
    "scratch_folder",
    "show_logs",
    "wait_for",
]

_started = time.monotonic()

#: This run's tag, at the end of the ID of every workflow the example starts. A workflow
#: ID names one workflow for good (starting it again finds the one already recorded), so
#: an example run a second time on the same database (``PERDURE_DATABASE_URL``) would
#: find its workflows of the first run, finished, instead of starting new ones.
RUN = uuid.uuid4().hex[:6]


def run_id(name: str) -> str:
    """``name`` made this run's own: ``word-report`` -> ``word-report-3f9a2c``."""
    return f"{name}-{RUN}"


def say(text: str) -> None:
    """Print one line of narration, stamped with the seconds since the example started."""
    print(f"[{time.monotonic() - _started:5.1f}s] {text}", flush=True)


class _Narrated(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        say(f"  [{record.name}] {record.getMessage()}")


def show_logs(logger: str = "perdure", level: int = logging.WARNING) -> None:
    """Narrate the log records of ``logger`` (perdure's retries, recoveries) in line with
    the rest of the story."""
    log = logging.getLogger(logger)
    log.setLevel(level)
    log.addHandler(_Narrated())


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A fresh temporary folder, made the current one while the example runs, then removed.

    The examples keep everything there: perdure's database (``App()`` opens
    ``./perdure.db`` unless ``PERDURE_DATABASE_URL`` names another), ledgers and logs.
    """
    folder = Path(tempfile.mkdtemp(prefix=f"perdure-{prefix}-"))
    previous = Path.cwd()
    os.chdir(folder)
    where = (
        "the database named by PERDURE_DATABASE_URL"
        if os.environ.get("PERDURE_DATABASE_URL")
        else "./perdure.db there"
    )
    say(
        f"Working in {folder}, on {where}; this run's workflow IDs end in -{RUN}, so that "
        "it can run again on the same database"
    )
    try:
        yield folder
    finally:
        os.chdir(previous)
        shutil.rmtree(folder, ignore_errors=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines file (a line still being written is left out)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line]


class JsonlTail:
    """Follows a JSON-lines file that others append to: ``new()`` returns the lines
    added since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0

    def new(self) -> list[dict[str, Any]]:
        entries = read_jsonl(self.path)
        fresh, self.seen = entries[self.seen :], len(entries)
        return fresh


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; raise ``TimeoutError`` naming ``what`` after
    ``timeout`` seconds. Waiting on observed state, not on sleeps, keeps the examples
    deterministic on a slow machine."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)

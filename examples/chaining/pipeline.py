"""Function chaining: a workflow that calls steps in sequence, each fed the previous result.

``word_report`` reads a text, splits it into words, counts them, ranks the most frequent
and publishes a small report. Each step's result is checkpointed when the step returns,
so a worker that dies mid-way leaves a workflow that any other worker resumes at the
first step without a checkpoint.

Workers run it with ``python -m perdure worker pipeline:app`` (main.py starts them in
a scratch folder). Every step also appends its start and end, with the PID of the
process running it, to ``./ledger.jsonl``: the proof of which step ran where.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import perdure

app = perdure.App()  # PERDURE_DATABASE_URL, or ./perdure.db

#: How long each step works: long enough that main.py's kill lands inside one.
STEP_SECONDS = 0.5
LEDGER = Path("ledger.jsonl")


@contextlib.contextmanager
def working_on(step: str) -> Iterator[None]:
    """Append the step's start and end to the ledger, and take ``STEP_SECONDS`` the way
    real work would. One ``os.write`` per line on an O_APPEND file keeps lines whole
    even with several processes writing."""

    def write(phase: str) -> None:
        line = json.dumps({"step": step, "phase": phase, "pid": os.getpid()}) + "\n"
        fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    write("start")
    time.sleep(STEP_SECONDS)
    yield
    write("end")


@app.step
def fetch(source: str) -> str:
    with working_on("fetch"):
        return Path(source).read_text(encoding="utf-8")


@app.step
def tokenize(text: str) -> list[str]:
    with working_on("tokenize"):
        return re.findall(r"[a-z']+", text.lower())


@app.step
def count(words: list[str]) -> dict[str, int]:
    with working_on("count"):
        return dict(Counter(words))


@app.step
def rank(counts: dict[str, int], top: int) -> list[tuple[str, int]]:
    with working_on("rank"):
        # Ties broken alphabetically, so that the report is the same on every run.
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]


@app.step
def publish(ranking: list[tuple[str, int]], destination: str) -> str:
    with working_on("publish"):
        lines = [f"{word}: {n}" for word, n in ranking]
        Path(destination).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return destination


@app.workflow
def word_report(source: str, destination: str) -> str:
    """The chain: each step gets what the previous one returned."""
    text = fetch(source)
    words = tokenize(text)
    counts = count(words)
    ranking = rank(counts, 3)
    return publish(ranking, destination)


#: The steps in the order the workflow calls them.
STEPS = ("fetch", "tokenize", "count", "rank", "publish")

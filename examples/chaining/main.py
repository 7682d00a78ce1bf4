"""Function chaining, crashed and resumed: ``python examples/chaining/main.py``.

A worker process runs the ``word_report`` chain (pipeline.py). While it is inside the
third step, it is killed with SIGKILL. A second worker resumes the workflow: the two
checkpointed steps are not run again, the step that was in flight is, and the chain
finishes with the same report as an uninterrupted run. The steps' ledger proves it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/, for _support

import pipeline
from _support import JsonlTail, Worker, Workers, run_id, say, scratch_folder, wait_for

HERE = Path(__file__).resolve().parent

TEXT = """\
The durable workflow runs its steps one after the other. A step that finished
is checkpointed; the workflow never runs a finished step again, whatever happens
to the process that runs the workflow.
"""
#: The step in progress when worker 1 is killed.
KILL_DURING = "count"


@dataclass
class Outcome:
    """What happened, for the narration and for the example's test."""

    report: str
    killed_pid: int
    resumed_pid: int
    #: Per step, the PIDs of the processes that started it, in order.
    runs: dict[str, list[int]]


class LedgerNarrator:
    """Prints the ledger's new lines as they appear: which worker starts or ends which step."""

    def __init__(self, ledger: Path, names: dict[int, str]) -> None:
        self.tail = JsonlTail(ledger)
        self.names = names
        self.entries: list[dict[str, Any]] = []

    def __call__(self) -> list[dict[str, Any]]:
        """Every ledger line so far, after printing the new ones."""
        for entry in self.tail.new():
            who = self.names.get(entry["pid"], f"pid {entry['pid']}")
            verb = "starts" if entry["phase"] == "start" else "ends  "
            say(f"  {who} {verb} {entry['step']}")
            self.entries.append(entry)
        return self.entries


def run(workdir: Path) -> Outcome:
    """Run the scenario in ``workdir`` (the current folder), narrating it."""
    source, destination = workdir / "input.txt", workdir / "report.txt"
    source.write_text(TEXT, encoding="utf-8")
    names: dict[int, str] = {}
    narrator = LedgerNarrator(workdir / pipeline.LEDGER, names)

    with Workers("pipeline:app", HERE, workdir) as workers:

        def start_worker() -> Worker:
            worker = workers.start()
            names[worker.pid] = f"worker {worker.number}"
            worker.wait_ready()
            say(f"{names[worker.pid]} (pid {worker.pid}): python -m perdure worker pipeline:app")
            return worker

        first = start_worker()
        # This process never launches the app: it is a client that records the workflow,
        # and a worker picks it up.
        handle = pipeline.app.start(
            pipeline.word_report, str(source), str(destination), workflow_id=run_id("word-report")
        )
        say(f"Started workflow {handle.workflow_id}: {' -> '.join(pipeline.STEPS)}")

        def in_flight() -> bool:
            return any(
                e["step"] == KILL_DURING and e["phase"] == "start" and e["pid"] == first.pid
                for e in narrator()
            )

        wait_for(in_flight, 30, f"worker 1 to start {KILL_DURING}")
        code = first.kill()
        say(f"SIGKILL worker 1 (pid {first.pid}) while it runs {KILL_DURING}: exit code {code}")
        status = handle.status()
        checkpointed = [step.name for step in status.steps if step.status == "SUCCEEDED"]
        say(f"The workflow is {status.status}, checkpointed: {', '.join(checkpointed)}")

        second = start_worker()

        def finished() -> bool:
            narrator()
            return handle.status().done

        wait_for(finished, 30, "the workflow to finish")
        result = handle.result(timeout=10)
        status = handle.status()
        say(f"Workflow {status.status} (recovered {status.recoveries}x), wrote {result}")
        say(f"worker 2 stopped with SIGTERM: exit code {second.stop()}")

    runs: dict[str, list[int]] = {step: [] for step in pipeline.STEPS}
    for entry in narrator():
        if entry["phase"] == "start":
            runs[entry["step"]].append(entry["pid"])
    for step, pids in runs.items():
        where = " then ".join(names.get(pid, f"pid {pid}") for pid in pids)
        again = "  <- in flight at the kill, so it ran again" if len(pids) > 1 else ""
        say(f"  {step:<9} ran {len(pids)}x: {where}{again}")
    report = Path(result).read_text(encoding="utf-8")
    say("Report: " + ", ".join(report.split("\n")[:-1]))
    return Outcome(report, first.pid, second.pid, runs)


def main() -> None:
    with scratch_folder("chaining") as workdir:
        try:
            run(workdir)
        finally:
            pipeline.app.shutdown()


if __name__ == "__main__":
    main()

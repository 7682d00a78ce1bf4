"""Fan-out/fan-in, crashed and resumed: ``python examples/fan_out/main.py``.

An album of 50 photos is kept on three mirrors. A worker process runs the thumbnail
job (thumbnails.py): it takes the album's list from the fastest mirror, then fans out
to one child workflow per photo and gathers their thumbnails. Once some of the
children have finished, the worker is killed with SIGKILL; a second worker resumes the
job, runs the children that had not finished, and the job reports all 50 thumbnails.
The resize ledger shows that no finished child ran again.

It runs twice: the sync job (``perdure.gather``), then the async one (``asyncio.gather``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/, for _support

import thumbnails
from _support import JsonlTail, Worker, Workers, run_id, say, scratch_folder, wait_for

HERE = Path(__file__).resolve().parent
app = thumbnails.app

ALBUM = "holiday"
PHOTOS = 50
#: Photos are this many pixels wide and high.
SIZE = 64
#: Worker 1 is killed once this many thumbnails are done (checkpointed).
KILL_AFTER = 15
#: How each job waits for its mirrors and its children.
FAN_IN = {
    "sync": "perdure.first for the mirrors, perdure.gather for the children",
    "async": "perdure.first_async for the mirrors, asyncio.gather for the children",
}


@dataclass
class Outcome:
    """What happened, for the narration and for the example's test."""

    job_id: str
    report: thumbnails.Report
    killed_pid: int
    resumed_pid: int
    #: The children that had finished when worker 1 was killed.
    checkpointed: set[str]
    #: Per child, the PIDs of the processes that started its resize step, in order.
    runs: dict[str, list[int]]
    #: The final status of each mirror's child workflow.
    mirrors: dict[str, str]


def make_album(root: Path) -> None:
    """``PHOTOS`` greyscale photos (PGM files) of ``ALBUM``, in each mirror's folder."""
    for mirror in thumbnails.MIRRORS:
        folder = root / mirror / ALBUM
        if folder.exists():
            continue
        folder.mkdir(parents=True)
        for n in range(PHOTOS):
            pixels = bytes(
                (x * (n + 1) + 2 * y * (n + 3)) % 256 for y in range(SIZE) for x in range(SIZE)
            )
            thumbnails.write_pgm(folder / f"photo-{n:02d}.pgm", SIZE, SIZE, pixels)


def finished_children(job_id: str) -> set[str]:
    """The IDs of the job's thumbnail children that have their result."""
    return {
        child.workflow_id
        for child in app.list_workflows(name="thumbnail", status="SUCCEEDED", limit=1000)
        if child.parent_id == job_id
    }


def mirror_statuses(job_id: str) -> dict[str, str]:
    """Each mirror's child workflow's status (they are the job's first three children,
    named by their place in the job: ``job/0``, ``job/1``, ``job/2``)."""
    return {
        mirror: app.retrieve(f"{job_id}/{n}").status().status
        for n, mirror in enumerate(thumbnails.MIRRORS)
    }


def run(workdir: Path, variant: str) -> Outcome:
    """Run the scenario for the ``sync`` or ``async`` job in ``workdir`` (the current
    folder), narrating it."""
    job_id = run_id(f"{ALBUM}-{variant}")
    make_album(workdir)
    out = workdir / f"thumbnails-{variant}"
    out.mkdir()
    ledger = JsonlTail(workdir / thumbnails.LEDGER)
    entries: list[dict[str, Any]] = []
    names: dict[int, str] = {}

    def read_ledger() -> list[dict[str, Any]]:
        entries.extend(e for e in ledger.new() if e["child"].startswith(job_id + "/"))
        return entries

    with Workers("thumbnails:app", HERE, workdir) as workers:

        def start_worker() -> Worker:
            worker = workers.start()
            names[worker.pid] = f"worker {worker.number}"
            worker.wait_ready()
            say(f"{names[worker.pid]} (pid {worker.pid}): python -m perdure worker thumbnails:app")
            return worker

        first = start_worker()
        # This process is a client: it records the job, a worker runs it.
        if variant == "sync":
            job = "make_thumbnails"
            handle = app.start(thumbnails.make_thumbnails, ALBUM, str(out), workflow_id=job_id)
        else:
            job = "make_thumbnails_async"
            handle = app.start(
                thumbnails.make_thumbnails_async, ALBUM, str(out), workflow_id=job_id
            )
        say(f"Started {job_id}: {job}, {FAN_IN[variant]}")
        mirror = app.get_event(job_id, "mirror", timeout=30)
        say(f"  {mirror} answered first; the other mirrors are cancelled")
        last = f"{job_id}/photo-{PHOTOS - 1:02d}"
        say(f"  {PHOTOS} children, one per photo: {job_id}/photo-00 ... {last}")

        def progress() -> bool:
            read_ledger()
            return len(finished_children(job_id)) >= KILL_AFTER

        wait_for(progress, 30, f"{KILL_AFTER} thumbnails")
        code = first.kill()
        checkpointed = finished_children(job_id)
        in_flight = {e["child"] for e in read_ledger() if e["phase"] == "start"} - checkpointed
        say(
            f"SIGKILL worker 1 (pid {first.pid}): exit code {code}, with {len(checkpointed)} "
            f"of {PHOTOS} thumbnails done and {len(in_flight)} being made"
        )

        second = start_worker()

        def finished() -> bool:
            read_ledger()
            return handle.status().done

        wait_for(finished, 60, f"{job_id} to finish")
        report = handle.result(timeout=10)
        status = handle.status()
        say(
            f"{job_id} {status.status} (recovered {status.recoveries}x): {report.photos} "
            f"thumbnails from {report.mirror}, {report.source_bytes:,} bytes of photos "
            f"-> {report.thumbnail_bytes:,} bytes"
        )
        say(f"worker 2 stopped with SIGTERM: exit code {second.stop()}")

    runs: dict[str, list[int]] = {}
    for entry in read_ledger():
        if entry["phase"] == "start":
            runs.setdefault(entry["child"], []).append(entry["pid"])
    by_second = sum(1 for pids in runs.values() if pids[-1] == second.pid)
    done_again = sum(1 for child in checkpointed if len(runs[child]) > 1)
    again = sorted(child.split("/")[1] for child, pids in runs.items() if len(pids) > 1)
    say(
        f"Ledger: {len(runs)} photos resized, {by_second} of them by worker 2; of the "
        f"{len(checkpointed)} done before the kill, {done_again} ran again"
    )
    say(f"  resized twice (in flight at the kill): {', '.join(again) or 'none'}")
    mirrors = mirror_statuses(job_id)
    say("  Mirrors: " + ", ".join(f"{m} {s}" for m, s in mirrors.items()))
    return Outcome(job_id, report, first.pid, second.pid, checkpointed, runs, mirrors)


def main() -> None:
    with scratch_folder("fan-out") as workdir:
        try:
            for variant in FAN_IN:
                run(workdir, variant)
        finally:
            app.shutdown()


if __name__ == "__main__":
    main()

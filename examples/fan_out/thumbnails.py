"""Fan-out/fan-in: one child workflow per photo, their results gathered by the parent.

An album's photos are kept on three mirrors. A thumbnail job first asks every mirror
for the album's list of photos and takes the first answer (``perdure.first``): the
fastest mirror wins, the slower ones are cancelled. Then it starts one ``thumbnail``
child workflow per photo (fan-out), which the workers run side by side, and collects
their results (fan-in) into a report.

The same job is written twice:

- ``make_thumbnails``, a sync workflow: it starts every child first, then waits for all
  of them with ``perdure.gather(*handles)``;
- ``make_thumbnails_async``, an async workflow: ``await app.start_async(...)`` for each
  child, then ``asyncio.gather`` of their ``result_async()``.

Each start is recorded like a step, so a replay (after a crash) starts no child twice,
and each child's result reaches the parent exactly once. A child that finished before
a crash is not run again; one that was running when its worker died is resumed by
another worker.

Workers run it with ``python -m perdure worker thumbnails:app`` (main.py starts them in
a scratch folder). The ``resize`` step appends its start and end, with the PID of the
process running it, to ``./ledger.jsonl``: the proof of which photo was resized where.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import perdure

#: A worker runs at most eight workflows at once (the job and its mirrors count too), as
#: a worker sized to its CPUs would for image work. The children queue for those slots,
#: which also spreads the fan-out over a second or so, for main.py's kill to land in.
app = perdure.App(max_workflows=8)  # PERDURE_DATABASE_URL, or ./perdure.db

#: The mirrors the album is kept on (folders of the scratch folder), and how long each
#: takes to answer.
MIRRORS = {"mirror-eu": 3.0, "mirror-us": 0.1, "mirror-asia": 1.5}
#: How long resizing one photo takes, the way a real (bigger) photo would.
RESIZE_SECONDS = 0.1
#: Thumbnails are this many times smaller in each direction.
SCALE = 4
LEDGER = Path("ledger.jsonl")


@dataclass
class Thumbnail:
    photo: str
    path: str
    width: int
    height: int
    source_bytes: int
    thumbnail_bytes: int


@dataclass
class Report:
    mirror: str
    photos: int
    source_bytes: int
    thumbnail_bytes: int


# -- the fastest mirror --------------------------------------------------------------------


@app.step
async def list_album(mirror: str, album: str) -> list[str]:
    """The paths of the album's photos on ``mirror``, once it answers. An async step: a
    cancel interrupts it while it waits for the mirror."""
    await asyncio.sleep(MIRRORS[mirror])
    return sorted(str(path) for path in Path(mirror, album).glob("*.pgm"))


@app.workflow
async def ask_mirror(mirror: str, album: str) -> list[str]:
    return await list_album(mirror, album)


# -- one photo: the child ----------------------------------------------------------------


def write_ledger(entry: dict[str, object]) -> None:
    """One line per ``os.write`` on an O_APPEND file: lines stay whole even with several
    processes writing."""
    line = json.dumps({**entry, "pid": os.getpid()}) + "\n"
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_pgm(path: Path) -> tuple[int, int, bytes]:
    """Width, height and pixels of a binary greyscale PGM written by main.py (its header
    on one line: ``P5 width height 255``)."""
    header, pixels = path.read_bytes().split(b"\n", 1)
    _, width, height, _ = header.split()
    return int(width), int(height), pixels


def write_pgm(path: Path, width: int, height: int, pixels: bytes) -> None:
    path.write_bytes(f"P5 {width} {height} 255\n".encode() + pixels)


@app.step
def resize(source: str, destination: str) -> Thumbnail:
    """Shrink the photo ``SCALE`` times, each thumbnail pixel the mean of a block."""
    child = perdure.workflow_id()
    write_ledger({"child": child, "phase": "start"})
    width, height, pixels = read_pgm(Path(source))
    small_w, small_h = width // SCALE, height // SCALE
    small = bytearray()
    for y in range(small_h):
        for x in range(small_w):
            block = [
                pixels[(y * SCALE + dy) * width + x * SCALE + dx]
                for dy in range(SCALE)
                for dx in range(SCALE)
            ]
            small.append(sum(block) // len(block))
    time.sleep(RESIZE_SECONDS)
    out = Path(destination)
    write_pgm(out, small_w, small_h, bytes(small))
    write_ledger({"child": child, "phase": "end"})
    return Thumbnail(
        Path(source).name,
        str(out),
        small_w,
        small_h,
        Path(source).stat().st_size,
        out.stat().st_size,
    )


@app.workflow
def thumbnail(source: str, destination: str) -> Thumbnail:
    return resize(source, destination)


# -- the job: fan-out, fan-in ---------------------------------------------------------------


def report(mirror: str, thumbnails: list[Thumbnail]) -> Report:
    return Report(
        mirror,
        len(thumbnails),
        sum(t.source_bytes for t in thumbnails),
        sum(t.thumbnail_bytes for t in thumbnails),
    )


def child_id(photo: str) -> str:
    """A child's ID: the job's ID and the photo's name (``job/photo-07``). Without a
    ``workflow_id``, a child is named by its place in the job (``job/5``)."""
    return f"{perdure.workflow_id()}/{Path(photo).stem}"


@app.workflow
def make_thumbnails(album: str, out: str) -> Report:
    """The sync job: start every child, then ``perdure.gather`` their results."""
    mirrors = [app.start(ask_mirror, mirror, album) for mirror in MIRRORS]
    index, photos = perdure.first(*mirrors)  # recorded: a replay takes the same one
    for loser in mirrors[:index] + mirrors[index + 1 :]:
        app.cancel(loser.workflow_id)
    perdure.set_event("mirror", list(MIRRORS)[index])
    children = [
        app.start(thumbnail, photo, str(Path(out, Path(photo).name)), workflow_id=child_id(photo))
        for photo in photos
    ]
    return report(list(MIRRORS)[index], perdure.gather(*children))


@app.workflow
async def make_thumbnails_async(album: str, out: str) -> Report:
    """The async job: start every child, then ``asyncio.gather`` their results."""
    mirrors = [await app.start_async(ask_mirror, mirror, album) for mirror in MIRRORS]
    index, photos = await perdure.first_async(*mirrors)
    for loser in mirrors[:index] + mirrors[index + 1 :]:
        await app.cancel_async(loser.workflow_id)
    perdure.set_event("mirror", list(MIRRORS)[index])
    children = [
        await app.start_async(
            thumbnail, photo, str(Path(out, Path(photo).name)), workflow_id=child_id(photo)
        )
        for photo in photos
    ]
    thumbnails = await asyncio.gather(*(child.result_async() for child in children))
    return report(list(MIRRORS)[index], list(thumbnails))


#: The job of each variant.
JOBS = {"sync": make_thumbnails, "async": make_thumbnails_async}

"""examples/fan_out: a job fans out to one child workflow per photo and gathers their
results (sync: perdure.gather, async: asyncio.gather), after taking the fastest mirror
with perdure.first; a worker SIGKILLed mid-fan-out, another one finishing the job
without running a finished child again."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from example_loader import load_example, run_script

VARIANTS = ["sync", "async"]


@pytest.fixture
def main(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example's main module, on the test's database, in ``tmp_path``."""
    monkeypatch.setenv("PERDURE_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    with load_example("fan_out") as module:
        try:
            yield module
        finally:
            module.app.shutdown()


def expected_report(main: ModuleType, root: Path) -> Any:
    photos = sorted((root / "mirror-us" / main.ALBUM).glob("*.pgm"))
    size = main.SIZE // main.thumbnails.SCALE
    header = len(f"P5 {size} {size} 255\n")
    return main.thumbnails.Report(
        "mirror-us",
        main.PHOTOS,
        sum(photo.stat().st_size for photo in photos),
        main.PHOTOS * (header + size * size),
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_child_per_photo_gathered_into_the_report(
    main: ModuleType, tmp_path: Path, variant: str
) -> None:
    thumbnails, app = main.thumbnails, main.app
    main.make_album(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with app:
        report = app.run(thumbnails.JOBS[variant], main.ALBUM, str(out), workflow_id="job")
        assert report == expected_report(main, tmp_path)
        # One child per photo, named after it, each with its own result.
        children = app.list_workflows(name="thumbnail", limit=1000)
        assert sorted(c.workflow_id for c in children) == [
            f"job/photo-{n:02d}" for n in range(main.PHOTOS)
        ]
        assert {c.parent_id for c in children} == {"job"}
        assert {c.status for c in children} == {"SUCCEEDED"}
        one = app.retrieve("job/photo-07").result()
        assert one == thumbnails.Thumbnail(
            "photo-07.pgm", str(out / "photo-07.pgm"), 16, 16, 4109, 269
        )
        # The fastest mirror won; the others were cancelled while they took their time.
        main.wait_for(lambda: "RUNNING" not in main.mirror_statuses("job").values(), 30, "mirrors")
        assert main.mirror_statuses("job") == {
            "mirror-eu": "CANCELLED",
            "mirror-us": "SUCCEEDED",
            "mirror-asia": "CANCELLED",
        }
    # Each thumbnail is the photo shrunk four times, each pixel the mean of a block.
    width, height, pixels = thumbnails.read_pgm(out / "photo-07.pgm")
    _, _, photo = thumbnails.read_pgm(tmp_path / "mirror-us" / main.ALBUM / "photo-07.pgm")
    block = [photo[dy * main.SIZE + dx] for dy in range(4) for dx in range(4)]
    assert (width, height, len(pixels), pixels[0]) == (16, 16, 256, sum(block) // 16)
    # No crash: every photo resized once.
    ledger = (tmp_path / thumbnails.LEDGER).read_text().splitlines()
    entries = [json.loads(line) for line in ledger]
    starts = [e["child"] for e in entries if e["phase"] == "start"]
    assert sorted(starts) == [f"job/photo-{n:02d}" for n in range(main.PHOTOS)]


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_fan_out_resumes_after_sigkill_without_rerunning_finished_children(
    main: ModuleType, tmp_path: Path, variant: str
) -> None:
    outcome = main.run(tmp_path, variant)
    assert outcome.report == expected_report(main, tmp_path)
    assert len(list((tmp_path / f"thumbnails-{variant}").glob("*.pgm"))) == main.PHOTOS
    assert outcome.mirrors == {
        "mirror-eu": "CANCELLED",
        "mirror-us": "SUCCEEDED",
        "mirror-asia": "CANCELLED",
    }
    killed, resumed = outcome.killed_pid, outcome.resumed_pid
    # Each child was created once (the starts are recorded), and each photo resized.
    children = [
        c
        for c in main.app.list_workflows(name="thumbnail", limit=1000)
        if c.parent_id == outcome.job_id
    ]
    assert len(children) == main.PHOTOS and {c.status for c in children} == {"SUCCEEDED"}
    assert sorted(outcome.runs) == sorted(c.workflow_id for c in children)
    # Worker 1 was killed mid-fan-out: it had finished some children, not all.
    assert main.KILL_AFTER <= len(outcome.checkpointed) < main.PHOTOS
    for child, pids in outcome.runs.items():
        if child in outcome.checkpointed:
            # Finished before the kill: never run again.
            assert pids == [killed], child
        else:
            # In flight at the kill (then run again by worker 2, unless its step was
            # already recorded), or left for worker 2.
            assert pids in ([killed], [killed, resumed], [resumed]), child
    assert any(pids == [resumed] for pids in outcome.runs.values())


@pytest.mark.slow
def test_script_runs() -> None:
    out = run_script("fan_out")
    for job in ("holiday-sync", "holiday-async"):
        assert re.search(
            rf"{job}-\w{{6}} SUCCEEDED \(recovered 1x\): 50 thumbnails from mirror-us", out
        )
    assert out.count("SIGKILL worker 1") == 2
    assert (
        out.count("Mirrors: mirror-eu CANCELLED, mirror-us SUCCEEDED, mirror-asia CANCELLED") == 2
    )

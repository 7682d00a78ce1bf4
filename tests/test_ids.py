"""New workflow IDs are time-ordered UUIDs (version 7): what makes a start's index
inserts land on the last pages of the indexes keyed by the ID (docs/performance.md,
"Time-ordered workflow IDs"); on both stores for the IDs the app gives."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import perdure
from perdure._ids import new_workflow_id


def made_at_ms(workflow_id: str) -> int:
    """The milliseconds since the epoch in a version 7 UUID's first 48 bits."""
    return uuid.UUID(workflow_id).int >> 80


def test_a_new_id_is_a_version_7_uuid_holding_the_time_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    workflow_id = new_workflow_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(workflow_id)
    assert str(parsed) == workflow_id  # the canonical form: lower case, hyphens
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= made_at_ms(workflow_id) <= after


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones() -> None:
    made = []
    for _ in range(20):
        made.append(new_workflow_id())
        time.sleep(0.002)
    assert made == sorted(made)
    # Within one millisecond the rest is random: a thousand IDs are a thousand.
    assert len({new_workflow_id() for _ in range(1000)}) == 1000


def test_started_and_forked_workflows_get_time_ordered_ids(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.step
    def first(x: int) -> int:
        return x + 1

    @app.workflow
    def flow(x: int) -> int:
        return first(x) * 2

    with app:
        handles = []
        for i in range(5):
            handles.append(app.start(flow, i))
            time.sleep(0.002)
        assert [h.result(timeout=15) for h in handles] == [2, 4, 6, 8, 10]
        ids = [h.workflow_id for h in handles]
        assert all(uuid.UUID(i).version == 7 for i in ids)
        assert ids == sorted(ids)
        # A fork without an ID of its own gets one too, later than its source's.
        forked = app.fork(ids[0], from_step=1)
        assert uuid.UUID(forked.workflow_id).version == 7 and forked.workflow_id > ids[-1]
        assert forked.result(timeout=15) == 2
        # A given ID is kept as it is.
        given = app.options(workflow_id="order-42").start(flow, 7)
        assert given.workflow_id == "order-42" and given.result(timeout=15) == 16


FORK_CHECK = """
import os
from perdure._ids import new_workflow_id
new_workflow_id()  # the parent has read bits for many IDs, most not handed out yet
reader, writer = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(reader)
    os.write(writer, " ".join(new_workflow_id() for _ in range(50)).encode())
    os._exit(0)
os.close(writer)
with os.fdopen(reader) as from_child:
    child = from_child.read().split()
os.waitpid(pid, 0)
parent = [new_workflow_id() for _ in range(50)]
print(len(child), len({i[14:] for i in child} & {i[14:] for i in parent}))
"""


def test_ids_from_one_read_of_the_random_source_differ_and_a_forked_child_reads_its_own() -> None:
    # The random bits are read for many IDs at once: every ID takes bits of its own, and
    # a forked child does not hand out the bits its parent still holds. (The fork runs in
    # a process of its own: forking this test's process, which has threads, warns.)
    ids = [new_workflow_id() for _ in range(600)]  # more than one read's worth
    assert len({i[14:] for i in ids}) == 600  # the random part (after "xxxxxxxx-xxxx-7")
    run = subprocess.run(
        [sys.executable, "-c", FORK_CHECK], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["50", "0"]  # 50 IDs from the child, none the parent's

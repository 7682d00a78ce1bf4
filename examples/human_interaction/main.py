"""Human interaction: ``python examples/human_interaction/main.py``.

Two expense claims go through ``expense_approval`` (approval.py), with timeouts of
seconds instead of days:

1. the approver answers in time (and double-clicks: the second click counts for nothing);
2. the approver doesn't answer: the manager is notified, and approves.

The people are played by this script, which sends their answers with ``app.send``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/, for _support

import approval
from _support import JsonlTail, run_id, say, scratch_folder, wait_for

app = approval.app


def expense(number: int) -> approval.Expense:
    """Claim ``number`` of this run: its ID is the workflow's (``expense-1-3f9a2c``)."""
    return approval.Expense(run_id(f"expense-{number}"), "sam", 40 * number, "ada", "grace")


class Outbox:
    """Narrates what ``notify`` delivered since the last look."""

    def __init__(self) -> None:
        self.tail = JsonlTail(approval.OUTBOX)

    def show(self) -> None:
        for message in self.tail.new():
            say(f"  [outbox] to {message['to']}: {message['text']}")


def wait_for_stage(expense_id: str, prefix: str, outbox: Outbox) -> None:
    """Wait until the workflow says it reached the stage starting with ``prefix``."""

    def reached() -> bool:
        outbox.show()
        return (approval.stage(expense_id) or "").startswith(prefix)

    wait_for(reached, 30, f"{expense_id} to be {prefix}")
    say(f"{expense_id} is {approval.stage(expense_id)}")


def approved_in_time(claim: approval.Expense, outbox: Outbox) -> approval.Decision:
    """The approver answers well within the time."""
    say(f"{claim.id}: sam asks for {claim.amount} EUR; ada has 60 s to answer")
    handle = app.start(approval.expense_approval, claim, 60.0, 60.0, workflow_id=claim.id)
    wait_for_stage(claim.id, "waiting", outbox)
    approval.answer(claim.id, "ada", True, click_id="ada-click-1")
    approval.answer(claim.id, "ada", True, click_id="ada-click-1")  # a double click
    say("ada clicks Approve (twice: the same click ID, so it counts once)")
    decision = handle.result(timeout=30)
    outbox.show()
    say(f"{claim.id}: {decision}")
    return decision


def escalated_then_approved(
    claim: approval.Expense, outbox: Outbox, answer_within: float = 2.0
) -> approval.Decision:
    """The approver doesn't answer in time; the manager, notified, approves."""
    say(f"{claim.id}: sam asks for {claim.amount} EUR; ada has {answer_within:g} s to answer")
    handle = app.start(approval.expense_approval, claim, answer_within, 60.0, workflow_id=claim.id)
    wait_for_stage(claim.id, "waiting", outbox)
    say("ada is away...")
    wait_for_stage(claim.id, "escalated", outbox)
    # Nothing runs while it waits: the workflow is suspended in the database.
    wait_for(lambda: handle.status().suspended, 30, f"{claim.id} to be suspended")
    say(f"{claim.id} is suspended, waiting for {handle.status().waiting_for}")
    time.sleep(0.5)  # grace reads her messages
    approval.answer(claim.id, "grace", True, click_id="grace-click-1")
    say("grace clicks Approve")
    decision = handle.result(timeout=30)
    outbox.show()
    say(f"{claim.id}: {decision}")
    return decision


def main() -> None:
    with scratch_folder("human-interaction"), app:
        outbox = Outbox()
        approved_in_time(expense(1), outbox)
        escalated_then_approved(expense(2), outbox)


if __name__ == "__main__":
    main()

"""Human interaction: wait for a person's approval, escalate when it doesn't come in time.

``expense_approval`` asks the approver, then waits for a message on the "approval"
topic. If none comes within ``answer_within`` seconds, it notifies the manager and
waits again, up to ``escalated_within``; if still nobody answered, the expense
expires. Either the approver or the manager can answer (``answer``: ``app.send``).

Waiting holds nothing: a wait longer than a second suspends the workflow in the
database, and a message (or the timeout) wakes it on any worker, days later if need
be. In production the timeouts would be days (``recv`` also takes a ``timedelta``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import perdure

app = perdure.App()  # PERDURE_DATABASE_URL, or ./perdure.db

#: Where ``notify`` delivers: one JSON line per message. Think email or chat.
OUTBOX = Path("outbox.jsonl")


@dataclass
class Expense:
    id: str
    employee: str
    amount: int
    approver: str
    manager: str


@dataclass
class Decision:
    approved: bool
    #: Who decided; None when nobody answered in time.
    by: str | None
    #: Whether it had to go to the manager.
    escalated: bool


@app.step
def notify(to: str, text: str) -> None:
    """Deliver a message to a person. A step: a replay doesn't send it again (only a
    crash during the send could)."""
    line = json.dumps({"to": to, "text": text}) + "\n"
    fd = os.open(OUTBOX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.workflow
def expense_approval(expense: Expense, answer_within: float, escalated_within: float) -> Decision:
    """Ask, wait ``answer_within`` seconds, escalate, wait ``escalated_within`` more."""
    what = f"{expense.id}: {expense.employee} spent {expense.amount} EUR"
    notify(expense.approver, f"Please approve {what}")
    perdure.set_event("stage", f"waiting for {expense.approver}")
    answer = perdure.recv("approval", timeout=answer_within)

    escalated = answer is None
    if answer is None:
        notify(expense.manager, f"{expense.approver} did not answer in time; please decide {what}")
        perdure.set_event("stage", f"escalated to {expense.manager}")
        answer = perdure.recv("approval", timeout=escalated_within)

    if answer is None:
        decision = Decision(approved=False, by=None, escalated=escalated)
        notify(expense.employee, f"{expense.id} expired: nobody decided in time")
    else:
        decision = Decision(approved=answer["approved"], by=answer["by"], escalated=escalated)
        verdict = "approved" if decision.approved else "rejected"
        notify(expense.employee, f"{expense.id} was {verdict} by {decision.by}")
    perdure.set_event("stage", "decided")
    return decision


def answer(expense_id: str, by: str, approved: bool, click_id: str) -> None:
    """What the approval page calls when a person clicks Approve or Reject. The click's
    ID is the idempotency key: a double click, or a retried request, counts once."""
    app.send(
        expense_id, {"approved": approved, "by": by}, topic="approval", idempotency_key=click_id
    )


def stage(expense_id: str) -> str | None:
    """Where the approval stands, as the workflow last published it (``set_event``)."""
    current: str | None = app.get_event(expense_id, "stage")
    return current

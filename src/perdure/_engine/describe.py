"""What a waiting workflow or step waits for, in words (for ``status()``)."""

from __future__ import annotations

import json

from .._model import StepRecord, StepState, WaitKind, WaitReason


def probe_state(output: str | None) -> tuple[str, int] | None:
    """The probe and its failures a RETRYING record's ``output`` holds, if any."""
    if not output:
        return None
    try:
        data = json.loads(output)
        return str(data["probe"]), int(data["failures"])
    except (ValueError, TypeError, KeyError):
        return None


def describe_wait(topic: str, at: str) -> str | None:
    """What a workflow suspended with ``topic`` until ``at`` (a time) waits for, or None
    for a message topic."""
    reason = WaitReason.parse(topic)
    if reason.kind in (WaitKind.RETRY, WaitKind.PROBE, WaitKind.BREAKER):
        return reason.describe(at)
    return None


def describe_step(record: StepRecord) -> str | None:
    """What a RETRYING step waits for when its probe failed, else None."""
    if record.status != StepState.RETRYING:
        return None
    state = probe_state(record.output)
    if state is None:
        return None
    return f"probe {state[0]} to pass (failed {state[1]} time(s))"

"""``perdure status``, ``list``, ``cancel``, ``breakers``: seeing workflows and breakers."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

import click

from ._breaker import BreakerStatus
from ._cli_common import (
    actor_option,
    app_option,
    bulk_filters,
    created_after_option,
    created_before_option,
    existing,
    fail,
    id_argument,
    jsonable,
    optional_id,
    parse_name,
    parse_status,
    shown,
    url_option,
    using,
    utc_seconds,
)
from ._cli_tables import on_terminal, print_table, status_cell
from ._handle import WorkflowStatus
from ._inspect import MAX_PAGE, WorkflowDetail, summary
from ._model import BreakerState, StepState, WorkflowState
from ._queue import with_place
from ._text import shorten


def _value(value: Any) -> str:
    """A decoded value as one short line of JSON."""
    return shorten(json.dumps(value, ensure_ascii=False, default=str), 200)


def _print_status(status: WorkflowStatus, detail: WorkflowDetail) -> None:
    click.echo(
        f"workflow {shown(status.workflow_id)} ({shown(status.name)}): {shown(status.status)}"
    )
    click.echo(f"  created {status.created_at.isoformat()}, version {shown(status.app_version)}")
    if status.owner:
        click.echo(f"  running on {shown(status.owner)}")
        alive = "alive" if detail.owner_alive else "EXPIRED: another worker may take it over"
        click.echo(f"  lease until {detail.lease_expires_at} ({alive})")
    if status.parent_id:
        click.echo(f"  child of {shown(status.parent_id)}")
    if detail.forked_from:
        steps = detail.forked_steps
        click.echo(f"  forked from {shown(detail.forked_from)} (its first {steps} step(s))")
    if status.deadline:
        click.echo(f"  deadline {status.deadline.isoformat()}")
    if status.cancel_requested_at and not status.done:
        click.echo(f"  cancel requested at {status.cancel_requested_at.isoformat()}")
    if status.recoveries:
        click.echo(f"  recovered {status.recoveries} time(s)")
    if detail.resumes:
        click.echo(f"  resumed {detail.resumes} time(s)")
    if status.waiting_for:
        click.echo(f"  suspended, waiting for {shown(status.waiting_for)}")
    if status.queued:
        click.echo(f"  {shown(status.queued.describe())}")
    if status.note:
        click.echo(f"  note: {shown(status.note)}")
    click.echo(f"  inputs: {shown(_value(detail.inputs))}")
    if status.status == WorkflowState.SUCCEEDED:
        click.echo(f"  output: {shown(_value(detail.output))}")
    if status.error:
        click.echo(f"  error: {shown(status.error)}")
        traceback = (detail.error or {}).get("traceback")
        if traceback:
            click.echo("  traceback:")
            for line in str(traceback).rstrip("\n").splitlines():
                click.echo(f"    | {shown(line)}")
    timing = {step.position: step for step in detail.steps}
    if on_terminal():
        _steps_table(status, detail)
    for step in status.steps if not on_terminal() else ():
        line = f"  [{shown(step.position)}] {shown(step.name)}: {shown(step.status)}"
        if step.attempts > 1 or step.status == StepState.RETRYING:
            line += f" after {step.attempts} attempt(s)"
        if step.waiting_for:
            line += f", waiting for {shown(step.waiting_for)}"
        if step.next_attempt_at:
            line += f", next attempt at {step.next_attempt_at.isoformat()}"
        timed = timing.get(step.position)
        if timed is not None and timed.started_at:
            line += f", started {timed.started_at}"
        if timed is not None and timed.ended_at:
            line += f", ended {timed.ended_at}"
        if step.error:
            line += f" ({shown(step.error)})"
        click.echo(line)
    if detail.in_flight:
        click.echo(f"  in flight: {', '.join(shown(p) for p in detail.in_flight)}")
    for child in detail.children:
        click.echo(f"  child {shown(child['workflow_id'])}: {shown(child['status'])}")
    for key, value in detail.events.items():
        click.echo(f"  event {shown(key)} = {shown(_value(value))}")
    for message in detail.messages_waiting:
        topic = message["topic"]
        click.echo(
            f"  message waiting on topic {shown(topic)!s}: {shown(_value(message['payload']))}"
        )
    for action in detail.actions:
        target = f" -> {shown(action['target_id'])}" if action["target_id"] else ""
        click.echo(
            f"  {action['at']} {shown(action['action'])} by {shown(action['actor'])}{target}"
        )


def _steps_table(status: WorkflowStatus, detail: WorkflowDetail) -> None:
    timing = {step.position: step for step in detail.steps}
    rows = []
    for step in status.steps:
        timed = timing.get(step.position)
        why = step.error or step.waiting_for or ""
        if step.next_attempt_at:
            why = f"{why}, next attempt at {step.next_attempt_at.isoformat()}".lstrip(", ")
        rows.append(
            [
                shown(step.position),
                shown(step.name),
                status_cell(shown(step.status)),
                str(step.attempts),
                (timed.started_at or "") if timed else "",
                (timed.ended_at or "") if timed else "",
                shown(why),
            ]
        )
    if rows:
        print_table(["#", "step", "status", "attempts", "started", "ended", "error / waits"], rows)


def _status_json(status: WorkflowStatus, detail: WorkflowDetail) -> dict[str, Any]:
    # Every key of earlier releases keeps its value ("error" the summary line, each step's
    # fields); the detail adds the rest ("error_detail" with the traceback, step times).
    data: dict[str, Any] = jsonable(detail.as_dict())
    data.update(jsonable(asdict(status)))
    data["error_detail"] = jsonable(detail.error)
    steps = {step["position"]: step for step in jsonable(detail.as_dict())["steps"]}
    for step in data["steps"]:
        extra = steps.get(step["position"], {})
        step.update(
            started_at=extra.get("started_at"),
            ended_at=extra.get("ended_at"),
            output=extra.get("output"),
            error_detail=extra.get("error"),
        )
    return data


@click.command()
@id_argument
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(workflow_id: str, app_spec: str | None, database_url: str | None, as_json: bool) -> None:
    """Show a workflow: status, owner and lease, inputs, output or error with traceback,
    steps with their times, children, events, messages waiting, operator actions."""
    with using(existing(app_spec, database_url)) as app:
        current = app.retrieve(workflow_id).status()
        detail = app.inspect(workflow_id)
    if as_json:
        click.echo(json.dumps(_status_json(current, detail), indent=2))
    else:
        _print_status(current, detail)


@click.command()
@click.argument("workflow_id", required=False, callback=optional_id)
@app_option
@url_option
@actor_option
@bulk_filters("PENDING or RUNNING")
def cancel(
    workflow_id: str | None,
    app_spec: str | None,
    database_url: str | None,
    actor: str | None,
    status_filter: str | None,
    name: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> None:
    """Ask a workflow and its children to cancel.

    Without WORKFLOW_ID, asks every active workflow matching --status, --name and the
    creation times (--name or a time is required: a bare `perdure cancel` is refused).
    """
    if workflow_id is None and name is None and created_after is None and created_before is None:
        fail("give a WORKFLOW_ID, or filters (--name, --created-after, --created-before)")
    if workflow_id is not None and any(
        value is not None for value in (status_filter, name, created_after, created_before)
    ):
        fail("give a WORKFLOW_ID or filters (--status, --name, --created-...), not both")
    with using(existing(app_spec, database_url)) as app:
        if workflow_id is None:
            asked_ids = app.cancel_many(
                status=status_filter,
                name=name,
                created_after=utc_seconds(created_after),
                created_before=utc_seconds(created_before),
                actor=actor,
            )
        else:
            asked = app.cancel(workflow_id, actor=actor)
    if workflow_id is None:
        for item in asked_ids:
            click.echo(f"workflow {shown(item)}: cancel requested")
        click.echo(f"{len(asked_ids)} workflow(s) asked to cancel", err=True)
    elif asked:
        click.echo(
            f"workflow {shown(workflow_id)}: cancel requested (it stops at its next step or wait)"
        )
    else:
        click.echo(f"workflow {shown(workflow_id)}: already finished or already asked to cancel")


@click.command(name="list")
@app_option
@url_option
@click.option(
    "--status",
    "status_filter",
    callback=parse_status,
    help="Only this status, in any case: " + ", ".join(s.value for s in WorkflowState) + ".",
)
@click.option("--name", callback=parse_name, help="Only workflows of this name.")
@created_after_option
@created_before_option
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=MAX_PAGE),
    default=20,
    show_default=True,
    help="How many, newest first.",
)
@click.option("--cursor", help="Continue after the page that printed this cursor.")
@click.option("--queue", help="Only those started in this queue.")
@click.option("--key", help="Only those of this queue key (with --queue).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the next cursor).")
def list_(
    app_spec: str | None,
    database_url: str | None,
    status_filter: str | None,
    name: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int,
    cursor: str | None,
    queue: str | None,
    key: str | None,
    as_json: bool,
) -> None:
    """List workflows, newest first, by status, name, creation time, queue and key, a page
    at a time.

    When there are more, the cursor of the next page is printed on stderr (in --json, as
    next_cursor); pass it as --cursor.
    """
    with using(existing(app_spec, database_url)) as app:
        page = app.list_page(
            status=status_filter,
            name=name,
            created_after=utc_seconds(created_after),
            created_before=utc_seconds(created_before),
            limit=limit,
            cursor=cursor,
            queue=queue,
            key=key,
        )
        # Where each queued one stands: one look each, for this page only.
        now = app.clock.time()
        page.workflows[:] = [
            item
            if item.queued is None
            else replace(
                item, queued=with_place(item.queued, app.store.queue_place(item.workflow_id, now))
            )
            for item in page.workflows
        ]
    if as_json:
        found = {"workflows": [summary(item) for item in page.workflows]}
        click.echo(json.dumps({**found, "next_cursor": page.next_cursor}, indent=2))
        return
    if on_terminal():
        rows = [
            [
                item.created_at.isoformat(),
                status_cell(shown(item.status)),
                shown(item.name),
                shown(item.workflow_id),
                shown(item.error or item.waiting_for or item.note or ""),
            ]
            for item in page.workflows
        ]
        print_table(["created", "status", "name", "workflow", "error / waits / note"], rows)
    for item in page.workflows if not on_terminal() else ():
        line = (
            f"{item.created_at.isoformat()}  {shown(item.status):<9}  {shown(item.name)}  "
            f"{shown(item.workflow_id)}"
        )
        if item.waiting_for:
            line += f"  waiting for {shown(item.waiting_for)}"
        if item.queued:
            line += f"  {shown(item.queued.describe())}"
        click.echo(line + (f"  note: {shown(item.note)}" if item.note else ""))
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)


@click.command()
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--open", "to_open", metavar="NAME", help="First open this breaker by hand.")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="How long --open keeps it open before a probe attempt may close it.",
)
@click.option("--close", "to_close", metavar="NAME", help="First close this breaker by hand.")
@actor_option
def breakers(
    app_spec: str | None,
    database_url: str | None,
    as_json: bool,
    to_open: str | None,
    seconds: float,
    to_close: str | None,
    actor: str | None,
) -> None:
    """List circuit breakers: state, failures, cool-down, probe and parked workflows.

    --open NAME first opens a breaker by hand for --seconds (steps behind it park their
    workflows); --close NAME first closes one and wakes every workflow parked on it.
    Both are logged in the operator actions log.
    """
    with using(existing(app_spec, database_url)) as app:
        if to_open is not None:
            app.open_breaker(to_open, seconds, actor=actor)
        if to_close is not None:
            woken = app.close_breaker(to_close, actor=actor)
            click.echo(f"breaker {shown(to_close)} closed: {woken} workflow(s) woken", err=True)
        found = app.breakers()
    if as_json:
        click.echo(json.dumps([jsonable(asdict(item)) for item in found], indent=2))
        return
    for item in found:
        click.echo(_breaker_line(item))


def _breaker_line(item: BreakerStatus) -> str:
    line = f"{shown(item.name)}  {shown(item.state)}"
    if item.state == BreakerState.CLOSED and item.failures:
        since = item.window_started_at.isoformat() if item.window_started_at else "?"
        line += f"  {item.failures} failure(s) since {since}"
    if item.state == BreakerState.OPEN and item.retry_at:
        line += f"  probe attempt from {item.retry_at.isoformat()}"
    if item.state == BreakerState.HALF_OPEN and item.probe_holder:
        until = item.probe_expires_at.isoformat() if item.probe_expires_at else "?"
        line += f"  probe attempt by {shown(item.probe_holder)} (until {until})"
    if item.parked:
        line += f"  {item.parked} workflow(s) parked"
    if item.last_error and item.state != BreakerState.CLOSED:
        line += f"  last error: {shown(item.last_error)}"
    return line

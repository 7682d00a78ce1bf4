"""``perdure resume``, ``fork``, ``restart``, ``send``: repairing workflows and talking to
them. Each is logged in the operator actions log with the OS user (or ``--actor``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from ._cli_common import (
    actor_option,
    app_option,
    bulk_filters,
    existing,
    fail,
    id_argument,
    optional_id,
    shown,
    url_option,
    using,
    utc_seconds,
)
from ._repair import default_actor


@click.command()
@click.argument("workflow_id", required=False, callback=optional_id)
@app_option
@url_option
@actor_option
@bulk_filters("FAILED or CANCELLED")
def resume(
    workflow_id: str | None,
    app_spec: str | None,
    database_url: str | None,
    actor: str | None,
    status_filter: str | None,
    name: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> None:
    """Resume a FAILED or CANCELLED workflow from its recorded steps (same ID).

    The step that failed runs afresh with a new attempt budget; the outcome it replaces
    is kept in the operator actions log. Without WORKFLOW_ID, resumes every FAILED and
    CANCELLED workflow matching --status, --name and the creation times.
    """
    filters = (status_filter, name, created_after, created_before)
    with using(existing(app_spec, database_url)) as app:
        if workflow_id is not None:
            if any(value is not None for value in filters):
                fail("give a WORKFLOW_ID or filters (--status, --name, --created-...), not both")
            app.resume(workflow_id, actor=actor)
            click.echo(f"workflow {shown(workflow_id)}: resumed (a worker takes it up now)")
            return
        resumed = app.resume_many(
            status=status_filter,
            name=name,
            created_after=utc_seconds(created_after),
            created_before=utc_seconds(created_before),
            actor=actor,
        )
    for item in resumed:
        click.echo(f"workflow {shown(item)}: resumed")
    click.echo(f"{len(resumed)} workflow(s) resumed", err=True)


@click.command()
@id_argument
@click.option(
    "--from-step",
    type=click.IntRange(min=0),
    required=True,
    help="Keep this many recorded steps; run the current code from there.",
)
@click.option("--new-id", help="The new workflow's ID (default: a new UUID).")
@app_option
@url_option
@actor_option
def fork(
    workflow_id: str,
    from_step: int,
    new_id: str | None,
    app_spec: str | None,
    database_url: str | None,
    actor: str | None,
) -> None:
    """Start a new workflow with the first --from-step recorded steps of WORKFLOW_ID.

    The new workflow replays those steps and runs the current code (the app version of
    --app, or of PERDURE_APP_VERSION) from there: to rerun after a bug fix, or to try
    again from a known point. Prints the new workflow's ID.
    """
    with using(existing(app_spec, database_url)) as app:
        handle = app.fork(workflow_id, from_step, new_id, actor=actor)
    click.echo(handle.workflow_id)


@click.command()
@id_argument
@click.option("--new-id", help="The new workflow's ID (default: a new UUID).")
@app_option
@url_option
@actor_option
def restart(
    workflow_id: str,
    new_id: str | None,
    app_spec: str | None,
    database_url: str | None,
    actor: str | None,
) -> None:
    """Start WORKFLOW_ID's workflow anew with the same inputs (a fork from step 0).

    Prints the new workflow's ID.
    """
    with using(existing(app_spec, database_url)) as app:
        handle = app.restart(workflow_id, new_id, actor=actor)
    click.echo(handle.workflow_id)


def _message(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        fail(f"the message must be JSON (a quoted string is '\"text\"'), not {text[:60]!r}")


@click.command()
@id_argument
@click.argument("message")
@click.option("--topic", help="The topic its perdure.recv(topic) waits on (default: none).")
@click.option("--idempotency-key", help="A key that makes a repeated send store nothing.")
@app_option
@url_option
@actor_option
def send(
    workflow_id: str,
    message: str,
    topic: str | None,
    idempotency_key: str | None,
    app_spec: str | None,
    database_url: str | None,
    actor: str | None,
) -> None:
    """Send MESSAGE (JSON) to a workflow's perdure.recv(--topic)."""
    value = _message(message)
    with using(existing(app_spec, database_url)) as app:
        who = actor or default_actor()
        app.send(workflow_id, value, topic, idempotency_key, actor=who)
    click.echo(f"workflow {shown(workflow_id)}: message sent")

"""``perdure history``, ``perdure versions`` and ``perdure retry-held``: a workflow's
recorded history, which app versions still have active workflows, and an operator's
"try this held workflow again now".

Registered on the ``perdure`` group by ``_cli.py`` (``COMMANDS``). This module takes
the app or the database the same way as the other commands (``--app MODULE:APP`` or
``--database-url`` / ``PERDURE_DATABASE_URL``) and, like them, escapes what it prints
and never shows a database password.
"""

from __future__ import annotations

import json

import click

from ._cli_common import (
    actor_option,
    app_option,
    existing,
    id_argument,
    shown,
    url_option,
    using,
)
from .testing import history as export_history


@click.command()
@id_argument
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON (to replay).")
def history(
    workflow_id: str, app_spec: str | None, database_url: str | None, as_json: bool
) -> None:
    """Show a workflow's recorded history; with --json, export it for
    perdure.testing.replay (perdure history ID --json > ID.json)."""
    with using(existing(app_spec, database_url)) as app:
        data = export_history(app, workflow_id)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    workflow = data["workflow"]
    click.echo(
        f"workflow {shown(workflow['id'])} ({shown(workflow['name'])}): "
        f"{shown(workflow['status'])}, version {shown(workflow['app_version'])}"
    )
    for step in data["steps"]:
        click.echo(f"  [{shown(step['position'])}] {shown(step['name'])}: {step['status']}")


@click.command()
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def versions(app_spec: str | None, database_url: str | None, as_json: bool) -> None:
    """Which app versions have active workflows: how many, how many held, the oldest.
    A version not listed has none: its workers can be stopped."""
    with using(existing(app_spec, database_url)) as app:
        found = app.versions()
    if as_json:
        rows = [
            {
                "app_version": item.app_version,
                "active": item.active,
                "held": item.held,
                "oldest_created_at": item.oldest_created_at.isoformat(),
            }
            for item in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not found:
        click.echo("no active workflows")
    for item in found:
        line = f"version {shown(item.app_version)}: {item.active} active"
        if item.held:
            line += f" ({item.held} held)"
        click.echo(line + f", oldest created {item.oldest_created_at.isoformat()}")


@click.command(name="retry-held")
@id_argument
@app_option
@url_option
@actor_option
def retry_held(
    workflow_id: str, app_spec: str | None, database_url: str | None, actor: str | None
) -> None:
    """Make a held workflow due now: a worker of its version replays it (after a fix
    that the code fingerprint does not see, e.g. in a helper function). Logged."""
    with using(existing(app_spec, database_url)) as app:
        retried = app.retry_held(workflow_id, actor=actor)
    if retried:
        click.echo(f"workflow {shown(workflow_id)}: held; a worker of its version tries it now")
    else:
        click.echo(f"workflow {shown(workflow_id)}: not held (see perdure status)")

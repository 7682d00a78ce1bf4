"""``perdure gc``, ``erase``, ``rekey``, ``audit``: retention, erasing a data subject,
rotating encryption keys, and the audit trail of operator actions (``_compliance``)."""

from __future__ import annotations

import json
import re

import click

from ._cli_common import actor_option, app_option, existing, fail, shown, url_option, using
from ._model import OperatorAction

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds, as seconds."""
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{value!r} is not a duration such as 30d, 12h, 90m or 3600")
    return float(match.group(1)) * _UNITS[match.group(2)]


@click.command()
@click.option(
    "--older-than",
    required=True,
    callback=parse_duration,
    help="Delete workflows that finished longer ago than this (30d, 12h, 90m, seconds).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    help="Only workflows that ended so (SUCCEEDED, FAILED, CANCELLED; repeatable; default all).",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--limit", type=click.IntRange(min=1), help="Delete at most this many trees.")
@app_option
@url_option
@actor_option
def gc(
    older_than: float,
    statuses: tuple[str, ...],
    dry_run: bool,
    limit: int | None,
    app_spec: str | None,
    database_url: str | None,
    actor: str | None,
) -> None:
    """Delete finished workflows older than --older-than, whole trees at a time.

    A root workflow goes with all its children, and only once none of them is active; a
    child never goes before its parent. Steps, messages, events and subject tags go
    with it; the operator actions log keeps its rows and gets a gc action per tree.
    """
    with using(existing(app_spec, database_url)) as app:
        chosen = statuses or ("SUCCEEDED", "FAILED", "CANCELLED")
        result = app.gc(
            older_than=older_than, statuses=chosen, dry_run=dry_run, limit=limit, actor=actor
        )
    verb = "would delete" if dry_run else "deleted"
    for tree in result.trees:
        children = f" (and {len(tree) - 1} descendant(s))" if len(tree) > 1 else ""
        click.echo(f"workflow {shown(tree[0])}: {verb}{children}")
    click.echo(f"{verb} {result.workflows} workflow(s) in {len(result.trees)} tree(s)", err=True)


@click.command()
@click.argument("subject")
@app_option
@url_option
@actor_option
def erase(subject: str, app_spec: str | None, database_url: str | None, actor: str | None) -> None:
    """Erase the data of SUBJECT: every stored payload of the workflows tagged with it.

    Inputs, outputs, errors, step results, messages and events of those workflows, their
    children and their forks become a tombstone; IDs, statuses and times stay. Refused
    while any of them is active (cancel them first). Logged.
    """
    with using(existing(app_spec, database_url)) as app:
        erased = app.erase(subject, actor=actor)
    for workflow_id in erased:
        click.echo(f"workflow {shown(workflow_id)}: erased")
    click.echo(f"{len(erased)} workflow(s) of subject {shown(subject)} erased", err=True)


@click.command()
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Rows per transaction.",
)
@app_option
@url_option
@actor_option
def rekey(batch: int, app_spec: str | None, database_url: str | None, actor: str | None) -> None:
    """Encrypt every stored value again under the current key of the app's
    EncryptingSerializer (give --app: the keys are the app's). Logged."""
    if app_spec is None:
        fail("rekey needs --app MODULE:APP (or PERDURE_APP): the keys are the app's")
    with using(existing(app_spec, database_url)) as app:
        count = app.rekey(batch=batch, actor=actor)
    click.echo(f"{count} value(s) encrypted again under the current key")


@click.command()
@click.option("--workflow", "workflow_id", help="Only the actions on this workflow.")
@click.option("--schedule", help="Only the actions on this schedule.")
@click.option("--queue", help="Only the actions on this queue.")
@click.option(
    "--action",
    type=click.Choice([str(action) for action in OperatorAction]),
    help="Only this kind of action.",
)
@click.option("--after", type=click.IntRange(min=0), default=0, help="Only after this seq.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@app_option
@url_option
def audit(
    workflow_id: str | None,
    schedule: str | None,
    queue: str | None,
    action: str | None,
    after: int,
    limit: int,
    as_json: bool,
    app_spec: str | None,
    database_url: str | None,
) -> None:
    """List operator actions (who did what to which workflow, schedule, queue or breaker,
    and when), oldest first. What is not a workflow shows as perdure.schedule:NAME,
    perdure.queue:NAME, perdure.breaker:NAME."""
    with using(existing(app_spec, database_url)) as app:
        entries = app.audit_log(
            workflow_id=workflow_id,
            schedule=schedule,
            queue=queue,
            action=action,
            after=after,
            limit=limit,
        )
    for entry in entries:
        if as_json:
            row = {
                "seq": entry.seq,
                "at": entry.at.isoformat(),
                "actor": entry.actor,
                "action": entry.action,
                "workflow_id": entry.workflow_id,
                "target_id": entry.target_id,
                "details": entry.details,
            }
            click.echo(json.dumps(row, sort_keys=True))
            continue
        target = f" -> {shown(entry.target_id)}" if entry.target_id else ""
        details = shown(json.dumps(entry.details, sort_keys=True))
        click.echo(
            f"{entry.seq}  {entry.at.isoformat()}  {shown(entry.actor)}  {entry.action}  "
            f"{shown(entry.workflow_id)}{target}  {details}"
        )

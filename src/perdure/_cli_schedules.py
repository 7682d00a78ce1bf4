"""``perdure schedules``: listing schedules, pausing, resuming and deleting one."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from ._cli_common import actor_option, app_option, existing, jsonable, shown, url_option, using
from ._scheduling import ScheduleStatus


@click.command()
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--pause", "to_pause", metavar="NAME", help="First pause this schedule.")
@click.option("--resume", "to_resume", metavar="NAME", help="First resume this schedule.")
@click.option("--delete", "to_delete", metavar="NAME", help="First delete this schedule.")
@actor_option
def schedules(
    app_spec: str | None,
    database_url: str | None,
    as_json: bool,
    to_pause: str | None,
    to_resume: str | None,
    to_delete: str | None,
    actor: str | None,
) -> None:
    """List schedules: cron, time zone, catch-up policy, next and last tick, last run.

    --pause NAME first pauses a schedule (no tick fires); --resume NAME resumes one (its
    next tick is the first after now); --delete NAME deletes one (the workflows it
    started stay). Each change is logged as an operator action (`perdure audit
    --schedule NAME`).
    """
    with using(existing(app_spec, database_url)) as app:
        if to_pause is not None:
            done = app.pause_schedule(to_pause, actor=actor)
            click.echo(f"schedule {shown(to_pause)} {'paused' if done else 'was paused'}", err=True)
        if to_resume is not None:
            done = app.resume_schedule(to_resume, actor=actor)
            word = "resumed" if done else "was not paused"
            click.echo(f"schedule {shown(to_resume)} {word}", err=True)
        if to_delete is not None:
            word = "deleted" if app.delete_schedule(to_delete, actor=actor) else "did not exist"
            click.echo(f"schedule {shown(to_delete)} {word}", err=True)
        found = app.schedules()
    if as_json:
        click.echo(json.dumps([jsonable(asdict(item)) for item in found], indent=2))
        return
    for item in found:
        click.echo(_line(item))


def _line(item: ScheduleStatus) -> str:
    line = f"{shown(item.name)}  {shown(item.cron)} ({shown(item.tz)})  {shown(item.workflow)}"
    line += f"  catch-up {item.catch_up}"
    if item.paused:
        line += "  PAUSED"
    elif item.next_tick is not None:
        line += f"  next {item.next_tick.isoformat()}"
    if item.last_run_id is not None:
        line += f"  last run {shown(item.last_run_id)}"
    return line + ("" if item.source == "code" else f"  ({item.source})")

"""The ``perdure`` command: run a worker, and look at workflows."""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click

from ._app import App
from ._breaker import BreakerStatus
from ._errors import PerdureError, StoreUnavailableError
from ._handle import WorkflowStatus

log = logging.getLogger("perdure")


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (the current folder is importable) and return the App."""
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise click.BadParameter(f"{spec!r} is not module:attribute, e.g. shop.workflows:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, App):
        raise click.BadParameter(
            f"{module_name}.{attribute or 'app'} is not a perdure.App (got {type(app).__name__})"
        )
    return app


def _app_from_options(app_spec: str | None, database_url: str | None) -> App:
    if app_spec:
        return load_app(app_spec)
    return App(database_url)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _print_status(status: WorkflowStatus) -> None:
    click.echo(f"workflow {status.workflow_id} ({status.name}): {status.status}")
    click.echo(f"  created {status.created_at.isoformat()}, version {status.app_version}")
    if status.owner:
        click.echo(f"  running on {status.owner}")
    if status.parent_id:
        click.echo(f"  child of {status.parent_id}")
    if status.deadline:
        click.echo(f"  deadline {status.deadline.isoformat()}")
    if status.cancel_requested_at and not status.done:
        click.echo(f"  cancel requested at {status.cancel_requested_at.isoformat()}")
    if status.recoveries:
        click.echo(f"  recovered {status.recoveries} time(s)")
    if status.waiting_for:
        click.echo(f"  suspended, waiting for {status.waiting_for}")
    if status.note:
        click.echo(f"  note: {status.note}")
    if status.error:
        click.echo(f"  error: {status.error}")
    for step in status.steps:
        line = f"  [{step.position}] {step.name}: {step.status}"
        if step.attempts > 1 or step.status == "RETRYING":
            line += f" after {step.attempts} attempt(s)"
        if step.waiting_for:
            line += f", waiting for {step.waiting_for}"
        if step.next_attempt_at:
            line += f", next attempt at {step.next_attempt_at.isoformat()}"
        if step.error:
            line += f" ({step.error})"
        click.echo(line)


app_option = click.option(
    "--app", "app_spec", metavar="MODULE:APP", help="Load this app (and its database URL)."
)
url_option = click.option(
    "--database-url", envvar="PERDURE_DATABASE_URL", help="Database URL, if no --app is given."
)


@click.group()
@click.version_option(package_name="perdure")
def cli() -> None:
    """perdure: durable execution for Python."""


@cli.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option(
    "--grace", type=float, default=None, help="Seconds to let running workflows finish on SIGTERM."
)
@click.option("--log-level", default="INFO", show_default=True, help="Logging level.")
def worker(app_spec: str, grace: float | None, log_level: str) -> None:
    """Run workflows of MODULE:APP until SIGTERM or Ctrl-C, then drain gracefully.

    The worker recovers interrupted workflows at start, runs those that other
    processes start, and on SIGTERM stops claiming, lets running workflows finish
    for the grace period and releases the rest to other workers.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = load_app(app_spec)
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if not _launch(app, stop):
        return
    click.echo(f"perdure worker running {app_spec} on {app.database_url}", err=True)
    while not stop.wait(1.0):
        pass
    click.echo("perdure worker stopping: draining running workflows", err=True)
    app.shutdown(grace)
    click.echo("perdure worker stopped", err=True)


def _launch(app: App, stop: threading.Event) -> bool:
    """Start the app's executor, waiting for a database that cannot be reached yet (a
    worker started before its server, or during a restart) instead of exiting; False if
    asked to stop meanwhile."""
    delay = 0.5
    while True:
        try:
            app.launch()
            return True
        except StoreUnavailableError as exc:
            app.shutdown(0)  # drop what the failed attempt opened
            log.warning("database unavailable (%s); trying again in %.1f s", exc, delay)
        if stop.wait(delay):
            return False
        delay = min(delay * 2, 15.0)


@cli.command()
@click.argument("workflow_id")
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(workflow_id: str, app_spec: str | None, database_url: str | None, as_json: bool) -> None:
    """Show a workflow's status and its recorded steps."""
    app = _app_from_options(app_spec, database_url)
    try:
        current = app.retrieve(workflow_id).status()
    except PerdureError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        app.shutdown()
    if as_json:
        click.echo(json.dumps(_jsonable(asdict(current)), indent=2))
    else:
        _print_status(current)


@cli.command()
@click.argument("workflow_id")
@app_option
@url_option
def cancel(workflow_id: str, app_spec: str | None, database_url: str | None) -> None:
    """Ask a workflow and its children to cancel."""
    app = _app_from_options(app_spec, database_url)
    try:
        asked = app.cancel(workflow_id)
    except PerdureError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        app.shutdown()
    if asked:
        click.echo(f"workflow {workflow_id}: cancel requested (it stops at its next step or wait)")
    else:
        click.echo(f"workflow {workflow_id}: already finished or already asked to cancel")


@cli.command(name="list")
@app_option
@url_option
@click.option("--status", "status_filter", help="Only this status (PENDING, RUNNING, ...).")
@click.option("--name", help="Only workflows of this name.")
@click.option("--limit", type=int, default=20, show_default=True, help="How many, newest first.")
def list_(
    app_spec: str | None,
    database_url: str | None,
    status_filter: str | None,
    name: str | None,
    limit: int,
) -> None:
    """List workflows, newest first."""
    app = _app_from_options(app_spec, database_url)
    try:
        found = app.list_workflows(status=status_filter, name=name, limit=limit)
    finally:
        app.shutdown()
    for item in found:
        line = f"{item.created_at.isoformat()}  {item.status:<9}  {item.name}  {item.workflow_id}"
        if item.waiting_for:
            line += f"  waiting for {item.waiting_for}"
        click.echo(line + (f"  note: {item.note}" if item.note else ""))


@cli.command()
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def breakers(app_spec: str | None, database_url: str | None, as_json: bool) -> None:
    """List circuit breakers: state, failures, cool-down, probe and parked workflows."""
    app = _app_from_options(app_spec, database_url)
    try:
        found = app.breakers()
    except PerdureError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        app.shutdown()
    if as_json:
        click.echo(json.dumps([_jsonable(asdict(item)) for item in found], indent=2))
        return
    for item in found:
        click.echo(_breaker_line(item))


def _breaker_line(item: BreakerStatus) -> str:
    line = f"{item.name}  {item.state}"
    if item.state == "CLOSED" and item.failures:
        since = item.window_started_at.isoformat() if item.window_started_at else "?"
        line += f"  {item.failures} failure(s) since {since}"
    if item.state == "OPEN" and item.retry_at:
        line += f"  probe attempt from {item.retry_at.isoformat()}"
    if item.state == "HALF_OPEN" and item.probe_holder:
        until = item.probe_expires_at.isoformat() if item.probe_expires_at else "?"
        line += f"  probe attempt by {item.probe_holder} (until {until})"
    if item.parked:
        line += f"  {item.parked} workflow(s) parked"
    if item.last_error and item.state != "CLOSED":
        line += f"  last error: {item.last_error}"
    return line


def main() -> None:
    """Entry point of the ``perdure`` console script."""
    cli(prog_name="perdure")

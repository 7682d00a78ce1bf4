"""The ``perdure`` command: run a worker, and look at workflows.

Whatever it prints for people is escaped (``escape_for_terminal``: an ID or an error
message from the database cannot forge a row or drive the terminal) and never shows a
database password (``redact_url``). Every error is one line on stderr and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote, urlsplit

import click

from ._app import App
from ._breaker import BreakerStatus
from ._cli_history import COMMANDS as HISTORY_COMMANDS
from ._errors import PerdureError, StoreUnavailableError
from ._handle import WorkflowStatus
from ._model import BreakerState, StepState, WorkflowState
from ._text import REDACTED, escape_for_terminal, redact_url
from ._validation import check_name, check_workflow_id
from .storage import open_store

log = logging.getLogger("perdure")

#: Set to 1 to see the traceback of an error the command did not expect (a bug).
TRACEBACK_ENV = "PERDURE_TRACEBACK"

# Secrets of the database URLs this process was given: replaced by *** in every line the
# command prints and logs, whatever library wrote the text. Shorter ones would blank out
# ordinary words; redact_url already hides them where a URL is shown.
_secrets: set[str] = set()
_MIN_SECRET = 4


class CliError(click.ClickException):
    """An error the command reports in one line and exits with status 1."""

    def format_message(self) -> str:
        """The message, escaped and without passwords (also when click prints it)."""
        return shown(self.message)


def fail(message: str) -> NoReturn:
    """Stop the command with ``message`` (escaped and redacted when shown)."""
    raise CliError(message)


def remember_secrets(url: str) -> None:
    """Note the passwords in ``url`` so that no output of this process shows them."""
    try:
        parts = urlsplit(url)
        candidates = [parts.password or ""]
        candidates += [v for k, v in parse_qsl(parts.query) if "pass" in k.lower()]
    except ValueError:
        return
    for secret in candidates:
        for form in (secret, unquote(secret)):
            if len(form) >= _MIN_SECRET:
                _secrets.add(form)


def scrub(text: str) -> str:
    """``text`` without any remembered password."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def shown(text: object) -> str:
    """Text from the database or a caller, ready to print: one line, no control
    characters, no password."""
    return scrub(escape_for_terminal(text))


# -- loading the app ----------------------------------------------------------------------------


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (the current folder is importable) and return the App."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if not module_name or not attribute.isidentifier():
        fail(f"{spec!r} is not MODULE:APP, e.g. shop.workflows:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            fail(
                f"cannot import {module_name!r}: no such module in {os.getcwd()} or on "
                "PYTHONPATH; run the command from the folder that holds it"
            )
        fail(f"importing {module_name!r} failed: {_one_line(exc)}")
    except Exception as exc:  # the module's own code failed: say where
        fail(f"importing {module_name!r} failed: {_one_line(exc)}{_where(exc)}")
    if not hasattr(module, attribute):
        apps = sorted(name for name, value in vars(module).items() if isinstance(value, App))
        found = f"; its perdure.App is {', '.join(apps)}" if apps else ", nor any perdure.App"
        fail(f"module {module_name!r} has no attribute {attribute!r}{found}")
    app = getattr(module, attribute)
    if not isinstance(app, App):
        fail(f"{module_name}:{attribute} is a {type(app).__name__}, not a perdure.App")
    remember_secrets(app.database_url)
    return app


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {last.filename}, line {last.lineno})"


def _app_from_options(app_spec: str | None, database_url: str | None) -> App:
    if app_spec:
        return load_app(app_spec)
    if database_url is not None:
        remember_secrets(database_url)
    try:
        app = App(database_url)
    except PerdureError as exc:
        fail(str(exc))
    remember_secrets(app.database_url)
    return app


def _existing(app_spec: str | None, database_url: str | None) -> App:
    """The app, for a command that reads or changes workflows that must already exist: a
    database that does not exist is refused, not created empty (a mistyped file name
    would otherwise list nothing, silently)."""
    app = _app_from_options(app_spec, database_url)
    try:
        # A missing SQLite file, or a PostgreSQL schema never set up (a mistyped
        # ?schema=), is refused here; the app's own store would create it.
        open_store(app.database_url, create=False).close()
    except PerdureError as exc:
        fail(f"{exc}; check --database-url, PERDURE_DATABASE_URL or --app")
    return app


@contextmanager
def _using(app: App) -> Iterator[App]:
    """The app, shut down afterwards; its errors become one line."""
    try:
        yield app
    except PerdureError as exc:
        fail(str(exc))
    finally:
        app.shutdown()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _print_status(status: WorkflowStatus) -> None:
    click.echo(
        f"workflow {shown(status.workflow_id)} ({shown(status.name)}): {shown(status.status)}"
    )
    click.echo(f"  created {status.created_at.isoformat()}, version {shown(status.app_version)}")
    if status.owner:
        click.echo(f"  running on {shown(status.owner)}")
    if status.parent_id:
        click.echo(f"  child of {shown(status.parent_id)}")
    if status.deadline:
        click.echo(f"  deadline {status.deadline.isoformat()}")
    if status.cancel_requested_at and not status.done:
        click.echo(f"  cancel requested at {status.cancel_requested_at.isoformat()}")
    if status.recoveries:
        click.echo(f"  recovered {status.recoveries} time(s)")
    if status.waiting_for:
        click.echo(f"  suspended, waiting for {shown(status.waiting_for)}")
    if status.note:
        click.echo(f"  note: {shown(status.note)}")
    if status.error:
        click.echo(f"  error: {shown(status.error)}")
    for step in status.steps:
        line = f"  [{shown(step.position)}] {shown(step.name)}: {shown(step.status)}"
        if step.attempts > 1 or step.status == StepState.RETRYING:
            line += f" after {step.attempts} attempt(s)"
        if step.waiting_for:
            line += f", waiting for {shown(step.waiting_for)}"
        if step.next_attempt_at:
            line += f", next attempt at {step.next_attempt_at.isoformat()}"
        if step.error:
            line += f" ({shown(step.error)})"
        click.echo(line)


def _parse_status(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return WorkflowState.parse(value).value
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _parse_workflow_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_workflow_id(value)
    except PerdureError as exc:
        raise click.BadParameter(str(exc)) from None


def _parse_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        return None if value is None else check_name("workflow name", value)
    except PerdureError as exc:
        raise click.BadParameter(str(exc)) from None


app_option = click.option(
    "--app", "app_spec", metavar="MODULE:APP", help="Load this app (and its database URL)."
)
url_option = click.option(
    "--database-url", envvar="PERDURE_DATABASE_URL", help="Database URL, if no --app is given."
)
id_argument = click.argument("workflow_id", callback=_parse_workflow_id)


@click.group()
@click.version_option(package_name="perdure")
def cli() -> None:
    """perdure: durable execution for Python."""


for _command in HISTORY_COMMANDS:  # perdure history, perdure versions (_cli_history.py)
    cli.add_command(_command)


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
    for the grace period and releases the rest to other workers. It waits for a
    database it cannot reach yet; it exits at once, with status 1, on a database
    that refuses it for good (no such database or role, a bad sslmode).
    """
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        fail(f"unknown --log-level {log_level!r}: use DEBUG, INFO, WARNING or ERROR")
    handler = logging.StreamHandler()
    handler.setFormatter(_ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    app = load_app(app_spec)
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if not _launch(app, stop):
        return
    click.echo(
        f"perdure worker running {shown(app_spec)} on {shown(redact_url(app.database_url))}",
        err=True,
    )
    while not stop.wait(1.0):
        pass
    click.echo("perdure worker stopping: draining running workflows", err=True)
    app.shutdown(grace)
    click.echo("perdure worker stopped", err=True)


class _ScrubbingFormatter(logging.Formatter):
    """Log lines without the database password, whoever logged it."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def _launch(app: App, stop: threading.Event) -> bool:
    """Start the app's executor, waiting for a database that cannot be reached yet (a
    worker started before its server, or during a restart) instead of exiting; False if
    asked to stop meanwhile. A failure that waiting cannot heal ends the command."""
    delay = 0.5
    where = redact_url(app.database_url)
    while True:
        try:
            app.launch()
            return True
        except StoreUnavailableError as exc:
            # Only an outage heals by waiting: the store reports a refusal for good (an
            # unknown database or role, a bad sslmode, not PostgreSQL at the address) as
            # another StoreError, handled below.
            app.shutdown(0)  # drop what the failed attempt opened
            log.warning("database unavailable (%s); trying again in %.1f s", exc, delay)
        except PerdureError as exc:  # a bad setting, a refused schema, a permanent error
            app.shutdown(0)
            fail(f"cannot start the worker on {where}: {exc}")
        if stop.wait(delay):
            return False
        delay = min(delay * 2, 15.0)


@cli.command()
@id_argument
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(workflow_id: str, app_spec: str | None, database_url: str | None, as_json: bool) -> None:
    """Show a workflow's status and its recorded steps."""
    with _using(_existing(app_spec, database_url)) as app:
        current = app.retrieve(workflow_id).status()
    if as_json:
        click.echo(json.dumps(_jsonable(asdict(current)), indent=2))
    else:
        _print_status(current)


@cli.command()
@id_argument
@app_option
@url_option
def cancel(workflow_id: str, app_spec: str | None, database_url: str | None) -> None:
    """Ask a workflow and its children to cancel."""
    with _using(_existing(app_spec, database_url)) as app:
        asked = app.cancel(workflow_id)
    if asked:
        click.echo(
            f"workflow {shown(workflow_id)}: cancel requested (it stops at its next step or wait)"
        )
    else:
        click.echo(f"workflow {shown(workflow_id)}: already finished or already asked to cancel")


@cli.command(name="list")
@app_option
@url_option
@click.option(
    "--status",
    "status_filter",
    callback=_parse_status,
    help="Only this status, in any case: " + ", ".join(s.value for s in WorkflowState) + ".",
)
@click.option("--name", callback=_parse_name, help="Only workflows of this name.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many, newest first.",
)
def list_(
    app_spec: str | None,
    database_url: str | None,
    status_filter: str | None,
    name: str | None,
    limit: int,
) -> None:
    """List workflows, newest first."""
    with _using(_existing(app_spec, database_url)) as app:
        found = app.list_workflows(status=status_filter, name=name, limit=limit)
    for item in found:
        line = (
            f"{item.created_at.isoformat()}  {shown(item.status):<9}  {shown(item.name)}  "
            f"{shown(item.workflow_id)}"
        )
        if item.waiting_for:
            line += f"  waiting for {shown(item.waiting_for)}"
        click.echo(line + (f"  note: {shown(item.note)}" if item.note else ""))


@cli.command()
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def breakers(app_spec: str | None, database_url: str | None, as_json: bool) -> None:
    """List circuit breakers: state, failures, cool-down, probe and parked workflows."""
    with _using(_existing(app_spec, database_url)) as app:
        found = app.breakers()
    if as_json:
        click.echo(json.dumps([_jsonable(asdict(item)) for item in found], indent=2))
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


def main() -> None:
    """Entry point of the ``perdure`` console script: every error is one line on stderr
    (``Error: ...``) and exit status 1 (2 for a usage error), never a traceback (set
    ``PERDURE_TRACEBACK=1`` to see the traceback of an unexpected one)."""
    try:
        code = cli.main(prog_name="perdure", standalone_mode=False)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "perdure"
        _exit(f"{exc.format_message().rstrip('.')}; see '{command} --help'", exc.exit_code)
    except click.ClickException as exc:
        _exit(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _exit("interrupted", 130)
    except BrokenPipeError:  # perdure list | head: the reader has all it wants
        sys.stderr.close()
        sys.exit(1)
    except PerdureError as exc:
        _exit(str(exc), 1)
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get(TRACEBACK_ENV) == "1":
            traceback.print_exc()
        _exit(f"unexpected {_one_line(exc)} (set {TRACEBACK_ENV}=1 to see the traceback)", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _exit(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {shown(message)}", err=True)
    sys.exit(code)

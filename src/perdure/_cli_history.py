"""``perdure history``, ``perdure versions`` and ``perdure retry-held``: a workflow's
recorded history, which app versions still have active workflows, and an operator's
"try this held workflow again now".

Registered on the ``perdure`` group by ``_cli.py`` (``COMMANDS``). This module takes
the app or the database the same way as the other commands (``--app MODULE:APP`` or
``--database-url`` / ``PERDURE_DATABASE_URL``) and, like them, escapes what it prints
and never shows a database password.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import click

from ._app import App
from ._errors import PerdureError
from ._text import escape_for_terminal, redact_url
from ._validation import check_workflow_id
from .testing import history as export_history


def _shown(text: object) -> str:
    return escape_for_terminal(text)


def _load(spec: str) -> App:
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise click.ClickException(f"{spec!r} is not MODULE:APP, e.g. shop.workflows:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app = getattr(importlib.import_module(module_name), attribute or "app")
    except Exception as exc:  # noqa: BLE001 - any import failure is one line
        raise click.ClickException(f"cannot load {spec!r}: {type(exc).__name__}: {exc}") from None
    if not isinstance(app, App):
        raise click.ClickException(f"{spec} is a {type(app).__name__}, not a perdure.App")
    return app


@contextmanager
def _app(app_spec: str | None, database_url: str | None) -> Iterator[App]:
    """The app of ``--app`` (or one on ``--database-url``) on a database that exists, shut
    down afterwards; a perdure error becomes one line."""
    try:
        app = _load(app_spec) if app_spec else App(database_url)
    except PerdureError as exc:
        raise click.ClickException(str(exc)) from None
    parts = urlsplit(app.database_url)
    if parts.scheme.lower() == "sqlite":
        path = Path(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not path.is_file():
            raise click.ClickException(
                f"no database at {redact_url(app.database_url)} (no file "
                f"{str(path.absolute())!r}); check --database-url, PERDURE_DATABASE_URL or --app"
            )
    try:
        yield app
    except PerdureError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        app.shutdown()


def _workflow_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_workflow_id(value)
    except PerdureError as exc:
        raise click.BadParameter(str(exc)) from None


_app_option = click.option(
    "--app", "app_spec", metavar="MODULE:APP", help="Load this app (and its database URL)."
)
_url_option = click.option(
    "--database-url", envvar="PERDURE_DATABASE_URL", help="Database URL, if no --app is given."
)


@click.command()
@click.argument("workflow_id", callback=_workflow_id)
@_app_option
@_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON (to replay).")
def history(
    workflow_id: str, app_spec: str | None, database_url: str | None, as_json: bool
) -> None:
    """Show a workflow's recorded history; with --json, export it for
    perdure.testing.replay (perdure history ID --json > ID.json)."""
    with _app(app_spec, database_url) as app:
        data = export_history(app, workflow_id)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    workflow = data["workflow"]
    click.echo(
        f"workflow {_shown(workflow['id'])} ({_shown(workflow['name'])}): "
        f"{_shown(workflow['status'])}, version {_shown(workflow['app_version'])}"
    )
    for step in data["steps"]:
        click.echo(f"  [{_shown(step['position'])}] {_shown(step['name'])}: {step['status']}")


@click.command()
@_app_option
@_url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def versions(app_spec: str | None, database_url: str | None, as_json: bool) -> None:
    """Which app versions have active workflows: how many, how many held, the oldest.
    A version not listed has none: its workers can be stopped."""
    with _app(app_spec, database_url) as app:
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
        line = f"version {_shown(item.app_version)}: {item.active} active"
        if item.held:
            line += f" ({item.held} held)"
        click.echo(line + f", oldest created {item.oldest_created_at.isoformat()}")


@click.command(name="retry-held")
@click.argument("workflow_id", callback=_workflow_id)
@_app_option
@_url_option
def retry_held(workflow_id: str, app_spec: str | None, database_url: str | None) -> None:
    """Make a held workflow due now: a worker of its version replays it (after a fix
    that the code fingerprint does not see, e.g. in a helper function)."""
    with _app(app_spec, database_url) as app:
        retried = app.retrieve(workflow_id).retry_hold()
    if retried:
        click.echo(f"workflow {_shown(workflow_id)}: held; a worker of its version tries it now")
    else:
        click.echo(f"workflow {_shown(workflow_id)}: not held (see perdure status)")


#: The commands this module adds to ``perdure``.
COMMANDS = (history, versions, retry_held)

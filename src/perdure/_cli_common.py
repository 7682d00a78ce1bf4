"""What every ``perdure`` command shares: loading the app, opening the database, options,
and printing safely.

Whatever a command prints for people is escaped (``escape_for_terminal``: an ID or an error
message from the database cannot forge a row or drive the terminal) and never shows a
database password (``redact_url``, ``scrub``). Every error is one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import click

from ._app import App
from ._errors import PerdureError
from ._inspect import jsonable as jsonable
from ._model import WorkflowState
from ._regions import database_urls
from ._text import REDACTED, escape_for_terminal
from ._validation import check_name, check_workflow_id
from .storage import open_store

log = logging.getLogger("perdure")

F = TypeVar("F", bound=Callable[..., Any])

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
        fail(f"importing {module_name!r} failed: {one_line(exc)}")
    except Exception as exc:  # the module's own code failed: say where
        fail(f"importing {module_name!r} failed: {one_line(exc)}{where(exc)}")
    if not hasattr(module, attribute):
        apps = sorted(name for name, value in vars(module).items() if isinstance(value, App))
        found = f"; its perdure.App is {', '.join(apps)}" if apps else ", nor any perdure.App"
        fail(f"module {module_name!r} has no attribute {attribute!r}{found}")
    app = getattr(module, attribute)
    if not isinstance(app, App):
        fail(f"{module_name}:{attribute} is a {type(app).__name__}, not a perdure.App")
    for url in database_urls(app):
        remember_secrets(url)
    context = click.get_current_context(silent=True)
    region = None if context is None else context.find_root().params.get("region")
    if region is not None:  # perdure --region NAME: that region's app, one database
        try:
            return cast(App, app.region(region))
        except PerdureError as exc:
            fail(str(exc))
    return app


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {last.filename}, line {last.lineno})"


def app_from_options(app_spec: str | None, database_url: str | None) -> App:
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


def existing(app_spec: str | None, database_url: str | None) -> App:
    """The app, for a command that reads or changes workflows that must already exist: a
    database that does not exist is refused, not created empty (a mistyped file name
    would otherwise list nothing, silently)."""
    app = app_from_options(app_spec, database_url)
    try:
        # A missing SQLite file, or a PostgreSQL schema never set up (a mistyped
        # ?schema=), is refused here; the app's own store would create it.
        for url in database_urls(app):
            open_store(url, create=False).close()
    except PerdureError as exc:
        fail(f"{exc}; check --database-url, PERDURE_DATABASE_URL or --app")
    return app


@contextmanager
def using(app: App) -> Iterator[App]:
    """The app, shut down afterwards; its errors become one line."""
    try:
        yield app
    except PerdureError as exc:
        fail(str(exc))
    finally:
        app.shutdown()


def parse_status(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return WorkflowState.parse(value).value
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_workflow_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_workflow_id(value)
    except PerdureError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
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
id_argument = click.argument("workflow_id", callback=parse_workflow_id)


class ScrubbingFormatter(logging.Formatter):
    """Log lines without the database password, whoever logged it."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


actor_option = click.option(
    "--actor", help="Who acts, for the operator actions log (default: the OS user)."
)


def utc_seconds(value: datetime | None) -> float | None:
    """Seconds since the epoch of a time from the command line: one without a zone is
    UTC, like every time perdure prints."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


created_after_option = click.option(
    "--created-after",
    type=click.DateTime(),
    help="Only workflows created after this time (UTC unless it has a zone).",
)
created_before_option = click.option(
    "--created-before",
    type=click.DateTime(),
    help="Only workflows created before this time (UTC unless it has a zone).",
)


def bulk_filters(statuses: str) -> Callable[[F], F]:
    """The options that pick workflows by filter when a command gets no WORKFLOW_ID
    (``cancel``, ``resume``): ``--status`` (``statuses`` says which and the default),
    ``--name`` and the creation times."""

    def decorate(command: F) -> F:
        for option in reversed(
            (
                click.option(
                    "--status",
                    "status_filter",
                    callback=parse_status,
                    help=f"With no ID: {statuses}, in any case (default: both).",
                ),
                click.option(
                    "--name", callback=parse_name, help="With no ID: only workflows of this name."
                ),
                created_after_option,
                created_before_option,
            )
        ):
            command = option(command)
        return command

    return decorate


def optional_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An optional WORKFLOW_ID argument, checked like a required one."""
    return None if value is None else parse_workflow_id(ctx, param, value)

"""``perdure worker``: run an app's workflows until stopped, then drain."""

from __future__ import annotations

import logging
import signal
import threading

import click

from ._app import App
from ._cli_common import (
    ScrubbingFormatter,
    fail,
    load_app,
    scrub,
    shown,
)
from ._errors import PerdureError, StoreUnavailableError
from ._logfields import JsonFormatter, LogContextFilter
from ._text import redact_url

log = logging.getLogger("perdure")


@click.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option(
    "--grace", type=float, default=None, help="Seconds to let running workflows finish on SIGTERM."
)
@click.option("--log-level", default="INFO", show_default=True, help="Logging level.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or one JSON object per record with workflow_id, "
    "workflow_name, step, position, attempt and executor.",
)
@click.option(
    "--region",
    "regions",
    multiple=True,
    metavar="NAME",
    help="A region this worker serves (repeat for several); required for an app with "
    "regions, refused for one without.",
)
def worker(
    app_spec: str, grace: float | None, log_level: str, log_format: str, regions: tuple[str, ...]
) -> None:
    """Run workflows of MODULE:APP until SIGTERM or Ctrl-C, then drain gracefully.

    The worker recovers interrupted workflows at start, runs those that other
    processes start, and on SIGTERM stops claiming, lets running workflows finish
    for the grace period and releases the rest to other workers. It waits for a
    database it cannot reach yet; it exits at once, with status 1, on a database
    that refuses it for good (no such database or role, a bad sslmode).

    For an app with regions (``App(regions={...})``), the worker runs only the
    workflows of the regions given with --region, each from its own database.
    """
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        fail(f"unknown --log-level {log_level!r}: use DEBUG, INFO, WARNING or ERROR")
    handler = logging.StreamHandler()
    # On the handler: the records of every logger (the steps' own too) get the fields.
    handler.addFilter(LogContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(clean=scrub))
    else:
        handler.setFormatter(ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    app = load_app(app_spec)
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if not _launch(app, stop, regions):
        return
    click.echo(f"perdure worker running {shown(app_spec)} on {_serving(app, regions)}", err=True)
    while not stop.wait(1.0):
        pass
    click.echo("perdure worker stopping: draining running workflows", err=True)
    app.shutdown(grace)
    click.echo("perdure worker stopped", err=True)


def _serving(app: App, regions: tuple[str, ...]) -> str:
    """The databases this worker serves, for people (passwords hidden)."""
    if not regions:
        return shown(redact_url(app.database_url))
    urls = [f"{name} ({redact_url(app.region(name).database_url)})" for name in regions]
    return "regions " + shown(", ".join(urls))


def _launch(app: App, stop: threading.Event, regions: tuple[str, ...] = ()) -> bool:
    """Start the app's executor, waiting for a database that cannot be reached yet (a
    worker started before its server, or during a restart) instead of exiting; False if
    asked to stop meanwhile. A failure that waiting cannot heal ends the command."""
    delay = 0.5
    where = redact_url(app.database_url)
    while True:
        try:
            app.launch(regions or None)
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

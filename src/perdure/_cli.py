"""The ``perdure`` command: the ``cli`` group, its commands (one module per concept:
``_cli_worker``, ``_cli_workflows``, ``_cli_repair``, ``_cli_history``, ``_cli_serve``,
``_cli_schedules``, ``_cli_compliance``; shared helpers in ``_cli_common``) and ``main``,
which turns every error into one line.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import NoReturn

import click

from ._cli_common import (
    TRACEBACK_ENV,
    one_line,
    shown,
)
from ._cli_compliance import audit, erase, gc, rekey
from ._cli_history import history, retry_held, versions
from ._cli_queues import queues
from ._cli_repair import fork, restart, resume, send
from ._cli_schedules import schedules
from ._cli_serve import serve
from ._cli_worker import worker
from ._cli_workflows import breakers, cancel, list_, status
from ._errors import PerdureError


@click.group()
@click.version_option(package_name="perdure")
@click.option(
    "--region",
    envvar="PERDURE_REGION",
    metavar="NAME",
    help="For an app with regions: act on this region's database alone (before the "
    "command: perdure --region eu audit --app mod:app). Without it, commands on one "
    "workflow find it in every region, and listings merge them.",
)
def cli(region: str | None) -> None:
    """perdure: durable execution for Python."""


# One line per command module.
COMMANDS = (
    worker,
    status,
    cancel,
    list_,
    breakers,
    resume,
    fork,
    restart,
    send,
    history,
    versions,
    retry_held,
    serve,
    schedules,
    queues,
    gc,
    erase,
    rekey,
    audit,
)
for _command in COMMANDS:
    cli.add_command(_command)


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
        _exit(f"unexpected {one_line(exc)} (set {TRACEBACK_ENV}=1 to see the traceback)", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _exit(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {shown(message)}", err=True)
    sys.exit(code)

"""``perdure queues``: listing queues (limits in force; running, waiting and delayed
counts) and changing a queue's limits."""

from __future__ import annotations

import json
from typing import Any

import click

from ._cli_common import actor_option, app_option, existing, shown, url_option, using
from ._cli_tables import on_terminal, print_table
from ._queue import UNCHANGED, Rate
from ._queueing import QueueStatus

#: What a limit option takes to remove the limit.
NO_LIMIT = "none"


def _limit(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    if value is None:
        return UNCHANGED
    if value.lower() == NO_LIMIT:
        return None
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(
            f"a positive whole number or {NO_LIMIT!r}, not {value!r}"
        ) from None
    if number < 1:
        raise click.BadParameter(f"a positive whole number or {NO_LIMIT!r}, not {value!r}")
    return number


def _rate(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    if value is None:
        return UNCHANGED
    if value.lower() == NO_LIMIT:
        return None
    limit, _, per = value.partition("/")
    try:
        return Rate(int(limit), float(per))
    except ValueError:
        raise click.BadParameter(
            f"LIMIT/SECONDS (such as 100/60: 100 starts a minute) or {NO_LIMIT!r}, not {value!r}"
        ) from None


@click.command()
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--update", "to_update", metavar="NAME", help="First change this queue's limits.")
@click.option(
    "--concurrency",
    callback=_limit,
    metavar="N|none",
    help="With --update: at most N running across every worker (none: no limit).",
)
@click.option(
    "--worker-concurrency",
    callback=_limit,
    metavar="N|none",
    help="With --update: at most N running in one worker process (none: no limit).",
)
@click.option(
    "--key-concurrency",
    callback=_limit,
    metavar="N|none",
    help="With --update: at most N running per key (none: no limit).",
)
@click.option(
    "--rate",
    callback=_rate,
    metavar="LIMIT/SECONDS|none",
    help="With --update: at most LIMIT starts in any SECONDS (none: no limit).",
)
@actor_option
def queues(
    app_spec: str | None,
    database_url: str | None,
    as_json: bool,
    to_update: str | None,
    concurrency: Any,
    worker_concurrency: Any,
    key_concurrency: Any,
    rate: Any,
    actor: str | None,
) -> None:
    """List queues: the limits in force, and how many workflows run, wait and are delayed.

    --update NAME first changes that queue's limits (those given: --concurrency,
    --worker-concurrency, --key-concurrency, --rate; "none" removes one). Every worker
    obeys them at its next claim; the change is logged as an operator action.
    """
    changes = (concurrency, worker_concurrency, key_concurrency, rate)
    if to_update is None and any(value is not UNCHANGED for value in changes):
        raise click.UsageError("a limit option needs --update NAME (the queue to change)")
    with using(existing(app_spec, database_url)) as app:
        if to_update is not None:
            updated = app.update_queue(
                to_update,
                concurrency=concurrency,
                worker_concurrency=worker_concurrency,
                key_concurrency=key_concurrency,
                rate=rate,
                actor=actor,
            )
            click.echo(f"queue {shown(updated.name)} updated", err=True)
        found = app.queues()
    if as_json:
        click.echo(json.dumps([item.as_dict() for item in found], indent=2))
        return
    headers = [
        "queue",
        "concurrency",
        "per worker",
        "per key",
        "rate",
        "running",
        "waiting",
        "delayed",
    ]
    rows = [_cells(item) for item in found]
    if on_terminal():
        print_table(headers, rows)
        return
    for row in rows:
        click.echo(
            "  ".join(
                f"{header}={cell}" if n else str(cell)
                for n, (header, cell) in enumerate(zip(headers, row, strict=True))
            )
        )


def _cells(item: QueueStatus) -> list[str]:
    queue = item.limits
    rate = "-" if queue.rate is None else f"{queue.rate.limit}/{queue.rate.per:g}s"
    return [
        shown(queue.name) + ("" if item.stored else " (not stored yet)"),
        _number(queue.concurrency),
        _number(queue.worker_concurrency),
        _number(queue.key_concurrency),
        rate,
        str(item.depth.running),
        str(item.depth.waiting),
        str(item.depth.delayed),
    ]


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)

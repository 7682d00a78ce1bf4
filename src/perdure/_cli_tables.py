"""Tables for people at a terminal (rich), plain lines everywhere else.

``perdure list`` and ``perdure status`` print a table when their output is a terminal,
and the lines of earlier releases when it is piped or redirected (scripts, ``grep``, the
tests), so that what a script reads does not change. Every cell is given to rich as
``Text``, never as markup: a workflow ID holding ``[bold]`` prints as typed. Cells are
the CLI's escaped text (``shown``) already: no control character reaches the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# rich is imported by the functions that print: it is a tenth of the start-up of every
# `perdure` command, and `perdure worker` never prints a table.

#: How a status is coloured in a table.
STATUS_STYLES = {
    "SUCCEEDED": "green",
    "FAILED": "bold red",
    "RUNNING": "blue",
    "PENDING": "yellow",
    "CANCELLED": "dim",
    "RETRYING": "yellow",
    "WAITING": "magenta",
}


def on_terminal() -> bool:
    """Whether standard output is a terminal (a person reads it)."""
    return sys.stdout.isatty()


def status_cell(status: str) -> Text:
    """A status, coloured."""
    from rich.text import Text

    return Text(status, style=STATUS_STYLES.get(status, ""))


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    console: Console | None = None,
) -> None:
    """Print ``rows`` under ``headers`` as a table (text cells are never markup)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(*headers, box=box.SIMPLE_HEAD, header_style="bold")
    for row in rows:
        table.add_row(*(cell if isinstance(cell, Text) else Text(str(cell)) for cell in row))
    (console or Console(highlight=False)).print(table)

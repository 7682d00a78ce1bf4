"""``perdure list`` and ``status`` at a terminal print rich tables (a real process on a
pseudo-terminal); piped, they print the plain lines that scripts read (test_cli_output.py).
A cell is text, never rich markup."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

import perdure
from perdure._cli_tables import print_table

TESTS_DIR = Path(__file__).resolve().parent


def on_a_terminal(*args: str) -> str:
    """What ``perdure ARGS`` prints when its output is a terminal."""
    env = dict(os.environ, COLUMNS="160", TERM="xterm")
    env.pop("PERDURE_DATABASE_URL", None)
    inherited = filter(None, env.get("PYTHONPATH", "").split(os.pathsep))
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *map(os.path.abspath, inherited)])
    primary, secondary = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "perdure", *args],
        stdout=secondary,
        stderr=subprocess.PIPE,
        env=env,
    ) as process:
        os.close(secondary)
        chunks = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the process closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=60)
        os.close(primary)
        assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    return b"".join(chunks).decode("utf-8", "replace")


def test_list_and_status_print_tables_on_a_terminal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/perdure.db"
    app = perdure.App(url, poll_interval=0.05)

    @app.step
    def pack(item: str) -> str:
        return item.upper()

    @app.workflow(name="packing")
    def packing(item: str) -> str:
        return pack(item)

    with app:
        assert app.options(workflow_id="[bold]w-1[/bold]").run(packing, "box") == "BOX"
    listed = on_a_terminal("list", "--database-url", url)
    header = next(line for line in listed.splitlines() if "created" in line)
    assert "status" in header and "workflow" in header
    assert "[bold]w-1[/bold]" in listed and "SUCCEEDED" in listed
    assert "─" in listed  # a rule of the table
    status = on_a_terminal("status", "[bold]w-1[/bold]", "--database-url", url)
    assert "attempts" in status and "pack" in status
    assert "─" in status


def test_a_cell_is_text_not_markup() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    print_table(["a", "b"], [["[red]x[/red]", ":smile:"]], console=console)
    assert "[red]x[/red]" in out.getvalue() and ":smile:" in out.getvalue()

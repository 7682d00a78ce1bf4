"""What ``perdure list``, ``status``, ``cancel`` and ``breakers`` print, as real processes:
text from the database is escaped, a database that does not exist is refused (not
created), filters are checked, and every error is one line without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import perdure

TESTS_DIR = Path(__file__).resolve().parent
EVIL_ID = "evil\nFORGED-ROW  SUCCEEDED\x1b[31mred\x1b]0;title\x07\u202eend"
EVIL_ERROR = "boom\n2026-01-01T00:00:00  SUCCEEDED  fake  row\x1b[2J"


def perdure_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PERDURE_DATABASE_URL", None)
    # Absolute: a relative entry (PYTHONPATH=src) would miss this tree from another cwd.
    inherited = filter(None, env.get("PYTHONPATH", "").split(os.pathsep))
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *map(os.path.abspath, inherited)])
    return subprocess.run(
        [sys.executable, "-m", "perdure", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode != 0, result
    assert result.stdout == "", result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def assert_terminal_safe(text: str) -> None:
    controls = [c for c in text if c != "\n" and not c.isprintable()]
    assert not controls, controls


def test_ids_and_errors_from_the_database_are_escaped(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    app = make_app()

    @app.workflow(name="hostile\x1b[32m")
    def hostile() -> None:
        raise ValueError(EVIL_ERROR)

    with app:
        handle = app.start(hostile, workflow_id=EVIL_ID)
        with pytest.raises(ValueError):
            handle.result(timeout=30)
        with pytest.raises(ValueError):  # a second row, to count the rows
            app.start(hostile, workflow_id="plain").result(timeout=30)

    listed = perdure_cli("list", "--database-url", database_url)
    assert listed.returncode == 0, listed
    assert_terminal_safe(listed.stdout)
    rows = listed.stdout.splitlines()
    assert len(rows) == 2, rows  # the newline in the ID forged no row
    assert any("evil\\nFORGED-ROW" in row and "\\x1b[31mred" in row for row in rows), rows
    assert all("hostile\\x1b[32m" in row for row in rows), rows

    shown = perdure_cli("status", EVIL_ID, "--database-url", database_url)
    assert shown.returncode == 0, shown
    assert_terminal_safe(shown.stdout)
    first, *rest = shown.stdout.splitlines()
    assert first.startswith("workflow evil\\nFORGED-ROW  SUCCEEDED\\x1b[31mred"), first
    assert "\\u202eend" in first, first
    error_lines = [line for line in rest if line.startswith("  error: ")]
    assert len(error_lines) == 1 and "boom\\n2026-01-01" in error_lines[0], rest
    assert "\\x1b[2J" in error_lines[0], error_lines

    # JSON stays JSON: the exact ID, escaped by JSON itself.
    as_json = perdure_cli("status", EVIL_ID, "--json", "--database-url", database_url)
    assert as_json.returncode == 0, as_json
    assert "\x1b" not in as_json.stdout
    assert json.loads(as_json.stdout)["workflow_id"] == EVIL_ID

    cancelled = perdure_cli("cancel", EVIL_ID, "--database-url", database_url)
    assert cancelled.returncode == 0, cancelled
    assert_terminal_safe(cancelled.stdout)
    assert len(cancelled.stdout.splitlines()) == 1, cancelled.stdout


def test_status_filter_in_any_case(make_app: Callable[..., perdure.App], database_url: str) -> None:
    app = make_app()

    @app.workflow()
    def greet(name: str) -> str:
        return f"hello {name}"

    with app:
        app.start(greet, "a", workflow_id="done-1").result(timeout=30)

    for spelling in ("succeeded", "SUCCEEDED", "Succeeded"):
        found = perdure_cli("list", "--status", spelling, "--database-url", database_url)
        assert found.returncode == 0, found
        assert "done-1" in found.stdout, (spelling, found)
    none = perdure_cli("list", "--status", "failed", "--database-url", database_url)
    assert none.returncode == 0 and none.stdout == "", none


def test_unknown_status_is_refused_with_the_valid_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/perdure.db"
    result = perdure_cli("list", "--status", "DONE", "--database-url", url)
    assert result.returncode == 2
    assert_one_line_error(result, "'DONE'", "PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED")
    assert not (tmp_path / "perdure.db").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["status", "order-1"],
        ["cancel", "order-1"],
        ["breakers"],
    ],
)
def test_a_missing_sqlite_database_is_refused_not_created(tmp_path: Path, args: list[str]) -> None:
    url = f"sqlite:///{tmp_path}/typo.db"
    result = perdure_cli(*args, "--database-url", url)
    assert_one_line_error(result, "no database at", "typo.db")
    assert not (tmp_path / "typo.db").exists()
    # Without any URL, the default ./perdure.db of an empty folder is refused too.
    result = perdure_cli(*args, cwd=tmp_path)
    assert_one_line_error(result, "no database at sqlite:///perdure.db")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_workflow_is_one_line(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    app = make_app()
    app.list_workflows()  # creates the database
    app.shutdown()
    result = perdure_cli("status", "nope\x1b[31m", "--database-url", database_url)
    assert_one_line_error(result, "no workflow with ID 'nope\\x1b[31m'")


def test_app_loading_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(
        "import perdure\norders = perdure.App('sqlite:///shop.db')\nnot_an_app = 42\n"
    )
    (tmp_path / "broken.py").write_text("x = 1\nraise RuntimeError('bad config')\n")
    (tmp_path / "needs.py").write_text("import no_such_dependency_xyz\n")
    cases = [
        (["worker", "shop:nope"], ["module 'shop' has no attribute 'nope'", "orders"]),
        (["worker", "shop"], ["module 'shop' has no attribute 'app'", "orders"]),
        (["worker", "shop:not_an_app"], ["shop:not_an_app is a int, not a perdure.App"]),
        (["worker", "nosuchmodule:app"], ["cannot import 'nosuchmodule': no such module"]),
        (["worker", "broken:app"], ["RuntimeError: bad config", "broken.py, line 2"]),
        (["worker", "needs:app"], ["No module named 'no_such_dependency_xyz'"]),
        (["worker", ":app"], ["is not MODULE:APP"]),
        (["status", "x", "--app", "shop:nope"], ["has no attribute 'nope'"]),
        (["worker"], ["Missing argument", "perdure worker --help"]),
        (["list", "--limit", "0"], ["--limit"]),
    ]
    for args, expected in cases:
        assert_one_line_error(perdure_cli(*args, cwd=tmp_path), *expected)


def test_breaker_lines_are_escaped(make_app: Callable[..., perdure.App], database_url: str) -> None:
    app = make_app()
    now = time.time()
    error = json.dumps({"type": "x:E", "message": "boom\n\x1b[2Jforged"})
    assert app.store.count_breaker_failure("pay\x1b[31m\nments", now, 1, 60, now + 30, error)
    app.shutdown()
    result = perdure_cli("breakers", "--database-url", database_url)
    assert result.returncode == 0, result
    assert_terminal_safe(result.stdout)
    (line,) = result.stdout.splitlines()
    assert line.startswith("pay\\x1b[31m\\nments  OPEN"), line
    assert line.endswith("last error: x.E: boom\\n\\x1b[2Jforged"), line

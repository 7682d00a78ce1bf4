"""The pytest plugin of ``perdure.testing``: its fixtures, in a pytest run of their own.

The inner run loads the plugin by its entry point when perdure is installed with it,
else with ``-p perdure.testing.plugin``; it runs on SQLite, then on a fresh schema of
the test PostgreSQL server (``--perdure-postgres-url``), which it drops afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from conftest import admin_connection

ROOT = Path(__file__).resolve().parent.parent

INNER = """
from datetime import timedelta

import perdure


def test_a_week_in_a_test(perdure_app, perdure_clock):
    @perdure_app.workflow
    def weekly() -> str:
        perdure.sleep(timedelta(days=7))
        return "done"

    started = perdure_clock.time()
    assert perdure_app.run(weekly) == "done"
    assert perdure_clock.time() - started >= 7 * 86400


def test_the_database(perdure_database_url):
    print("URL", perdure_database_url)
    assert perdure_database_url.startswith(("sqlite:///", "postgresql://"))
"""


def run_inner(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(INNER)
    env = dict(os.environ)
    paths = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PERDURE_TEST_POSTGRES_URL", None)
    installed = any(ep.name == "perdure" for ep in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "perdure.testing.plugin"]
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *plugin]
    return subprocess.run(
        [*command, *options, "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_plugin_is_registered_as_a_pytest_entry_point() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.entry-points.pytest11]", 1)[1].split("\n[", 1)[0]
    assert 'perdure = "perdure.testing.plugin"' in section


def test_the_fixtures_on_sqlite(tmp_path: Path) -> None:
    result = run_inner(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout and "URL sqlite:///" in result.stdout


def test_the_fixtures_on_postgresql(tmp_path: Path, postgres_server: str) -> None:
    result = run_inner(tmp_path, f"--perdure-postgres-url={postgres_server}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout and "URL postgresql://" in result.stdout
    schema = result.stdout.split("schema=", 1)[1].split()[0].split("&")[0]
    with admin_connection(postgres_server) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchone()
    assert row == (0,), f"schema {schema} was not dropped"

"""The public surface changes only on purpose: exports, docstrings, CLI help and docs."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import perdure
from perdure._cli import cli

ROOT = Path(__file__).resolve().parent.parent

EXPORTED = {
    "AmbiguousWorkflowError",
    "App",
    "AuditEntry",
    "EncryptingSerializer",
    "ErasureRefusedError",
    "GcResult",
    "Retention",
    "generate_key",
    "BreakerStatus",
    "Cancelled",
    "CheckpointFailed",
    "CircuitBreaker",
    "Clock",
    "ConfigurationError",
    "InvalidValueError",
    "DeadlineExceeded",
    "DeadlineExceededError",
    "HoldStatus",
    "JSONSerializer",
    "LeaseLost",
    "NonDeterminismError",
    "PerdureError",
    "PickleSerializer",
    "Queue",
    "QueueReason",
    "QueuedStatus",
    "Rate",
    "Retry",
    "ScheduleStatus",
    "Saga",
    "SerializationError",
    "Serializer",
    "Settings",
    "StepFailedError",
    "StepStatus",
    "StepTimeoutError",
    "StoreError",
    "StoreRejectedError",
    "StoreUnavailableError",
    "SystemClock",
    "UnknownWorkflowError",
    "VersionStatus",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowFinishedError",
    "WorkflowNotResumableError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowStatus",
    "WorkflowDetail",
    "WorkflowPage",
    "StepDetail",
    "WorkflowTimeoutError",
    "__version__",
    "continue_as_new",
    "deprecate_patch",
    "first",
    "first_async",
    "gather",
    "now",
    "observability",
    "patched",
    "probes",
    "random",
    "recv",
    "recv_async",
    "saga",
    "set_event",
    "set_event_async",
    "sleep",
    "sleep_async",
    "sleep_until",
    "sleep_until_async",
    "testing",
    "uuid4",
    "workflow_id",
    "write_stream",
    "write_stream_async",
    "close_stream",
    "close_stream_async",
    "connection",
}


def test_exported_names() -> None:
    assert set(perdure.__all__) == EXPORTED
    for name in perdure.__all__:
        assert hasattr(perdure, name), name


def test_every_public_name_has_a_docstring() -> None:
    for name in perdure.__all__:
        value = getattr(perdure, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
            for attr, member in vars(value).items() if inspect.isclass(value) else ():
                if not attr.startswith("_") and inspect.isfunction(member):
                    assert inspect.getdoc(member), f"{name}.{attr}"


def test_errors_survive_pickling() -> None:
    import pickle

    errors = [
        perdure.NonDeterminismError("wf", "3", "pay", "refund"),
        perdure.UnknownWorkflowError("x", ("a",)),
        perdure.WorkflowNotFoundError("w"),
        perdure.WorkflowFailedError("builtins:ValueError", "bad", "tb"),
        perdure.WorkflowTimeoutError("w", 1.0),
        perdure.LeaseLost("w", 2),
        perdure.CheckpointFailed("w", "db down"),
        perdure.ErasureRefusedError("alice", ["w1"]),
        perdure.ErasureRefusedError("alice", ["w1"], ["w2"]),
        perdure.AmbiguousWorkflowError("w", ("eu", "us")),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)


def test_every_cli_command_has_help_and_is_documented() -> None:
    docs = (ROOT / "docs" / "cli.md").read_text()
    runner = CliRunner()
    for name, command in cli.commands.items():  # type: ignore[attr-defined]
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert command.help, name
        assert f"perdure {name}" in docs, f"docs/cli.md does not document 'perdure {name}'"


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "perdure", "--help"], capture_output=True, text=True, check=True
    )
    assert "worker" in result.stdout


def test_readme_example_runs(tmp_path: Path) -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block is not None
    (tmp_path / "example.py").write_text(block.group(1))
    for _ in range(2):  # the second run finds the workflow and runs nothing again
        result = subprocess.run(
            [sys.executable, "example.py"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr
        assert "{'order': '42', 'charge': 'ch_42'} SUCCEEDED" in result.stdout


def test_every_test_named_in_the_guarantees_exists() -> None:
    import re

    text = (ROOT / "docs" / "guarantees.md").read_text()
    named = set(re.findall(r"`?(test_\w+\.py)::(test_\w+)`?", text))
    assert named, "docs/guarantees.md names no tests"
    for filename, test in sorted(named):
        source = (ROOT / "tests" / filename).read_text()
        assert f"def {test}(" in source, f"{filename}::{test} named in docs/guarantees.md"


def test_the_core_and_the_worker_import_no_optional_library() -> None:
    # What `import perdure` and `perdure worker` load is every process's start-up (a
    # worker that replaces a killed one starts recovering only after it): the optional
    # extras, the tables of the CLI and urllib's HTTP client are loaded where they are used.
    heavy = (
        "opentelemetry.trace",
        "opentelemetry.metrics",
        "cryptography",
        "rich",
        "urllib.request",
    )
    script = (
        "import sys, perdure, perdure._cli, perdure.observability, perdure.probes\n"
        f"print(sorted(name for name in {heavy!r} if name in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout

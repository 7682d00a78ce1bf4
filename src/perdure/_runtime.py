"""Kept for older imports: the engine lives in ``perdure._engine``."""

from ._engine.run import WorkflowRun

__all__ = ["WorkflowRun"]

"""Kept for older imports: the engine lives in ``perdure._engine``."""

from ._engine.scope import Scope, current_scope, current_workflow_id
from ._engine.state import current_run, task_factory

__all__ = ["Scope", "current_run", "current_scope", "current_workflow_id", "task_factory"]

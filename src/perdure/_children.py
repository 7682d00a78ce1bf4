"""Kept for older imports: the engine lives in ``perdure._engine``."""

from ._engine.cancelling import cancel_from_workflow, cancel_from_workflow_async
from ._engine.children import child_result, child_result_async, start_child, start_child_async
from ._engine.fanin import first, first_async, gather
from ._engine.messages import send_from_workflow, send_from_workflow_async

__all__ = [
    "cancel_from_workflow",
    "cancel_from_workflow_async",
    "child_result",
    "child_result_async",
    "first",
    "first_async",
    "gather",
    "send_from_workflow",
    "send_from_workflow_async",
    "start_child",
    "start_child_async",
]

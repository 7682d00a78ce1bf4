"""The worker: runs workflows in this process (executor, run table, maintenance, threads)."""

from ._executor import Executor, Owner, StartSlot
from ._host import WorkerHost
from ._table import RunTable, Slot

#: The worker of an app; ``Executor`` is its older name.
Worker = Executor

__all__ = ["Executor", "Owner", "RunTable", "Slot", "StartSlot", "Worker", "WorkerHost"]

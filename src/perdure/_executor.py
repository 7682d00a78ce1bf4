"""The executor's older import path: it lives in ``perdure._worker`` now. Kept because
``bench/probe.py`` imports ``perdure._executor.Executor`` (and patches its ``_finish``);
drop it once the bench imports ``perdure._worker``."""

from ._worker._executor import Executor

__all__ = ["Executor"]

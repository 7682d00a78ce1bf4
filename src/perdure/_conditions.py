"""Kept for older imports: the engine lives in ``perdure._engine``."""

from ._engine.describe import describe_step, describe_wait

__all__ = ["describe_step", "describe_wait"]

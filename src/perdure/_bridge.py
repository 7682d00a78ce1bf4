"""Kept for older imports: the engine lives in ``perdure._engine``."""

from ._engine.bridge import FutureBridge

__all__ = ["FutureBridge"]

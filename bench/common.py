"""Small helpers of the benchmark: progress messages, the log capture of perdure's and
psycopg's warnings, and percentiles."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _CountingHandler(logging.Handler):
    """Counts the warnings of perdure and psycopg in the benchmark process (they go to a
    file, not to the terminal): a figure with warnings ran into trouble."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


LOG_COUNT = _CountingHandler()


def capture_logs(path: Path) -> None:
    """Send the warnings of perdure and psycopg to ``path``, and count them."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("perdure", "psycopg"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.addHandler(LOG_COUNT)
        logger.propagate = False


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]

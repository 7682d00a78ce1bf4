"""``python -m services NAME --port PORT --state-dir DIR``: serve one service with uvicorn."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import uvicorn

from . import NAMES


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds each answer takes to come back, after the work is done",
    )
    args = parser.parse_args()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"{__package__}.{args.name}")
    app = module.create_app(args.state_dir, args.latency)
    # Quiet uvicorn: the services narrate what they do themselves, and the demo prints it.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

"""``python -m bench``: the same as ``python bench/run.py`` (run from the checkout)."""

import sys

from bench.cli import main

sys.exit(main())

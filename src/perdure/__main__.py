"""``python -m perdure``: the same as the ``perdure`` command."""

from ._cli import main

main()

"""``python -m shadows``: the same as the ``shadows`` command."""

from shadows.cli import main

main()

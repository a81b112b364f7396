"""``python -m shadows``: the same as the ``shadows`` command."""

from .cli import main

main()

"""The ``shadows`` Typer app every command module registers on (kept apart from the
package's ``__init__``, which imports the command modules, so that they need not import it)."""

from __future__ import annotations

import typer

from shadows._version import __version__

app = typer.Typer(
    name="shadows",
    help="shadows: distributed background tasks on Redis streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.command()
def version() -> None:
    """Print the installed version of shadows."""
    print(__version__)

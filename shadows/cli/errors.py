"""Errors the CLI reports in one line."""


class CLIError(Exception):
    """A user error the CLI reports in one line, without a traceback."""

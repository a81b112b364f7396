"""Errors the CLI reports in one line."""


class CLIError(Exception):
    """A user error the CLI reports without a traceback, exiting with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status

"""shadows: a distributed background-task system for Python on Redis streams."""

from ._version import __version__
from .annotations import Logged
from .dependencies import Dependency, ExponentialRetry, Retry
from .execution import Execution
from .shadow import Shadow, UnknownTaskError
from .worker import Worker

__all__ = [
    "Dependency",
    "Execution",
    "ExponentialRetry",
    "Logged",
    "Retry",
    "Shadow",
    "UnknownTaskError",
    "Worker",
    "__version__",
]

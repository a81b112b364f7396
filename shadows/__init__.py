"""shadows: a distributed background-task system for Python on Redis streams."""

from ._version import __version__
from .annotations import Logged
from .batch import BatchError
from .dependencies import (
    ConcurrencyLimit,
    Cron,
    CurrentExecution,
    CurrentShadow,
    CurrentWorker,
    Dependency,
    DependencyError,
    Depends,
    ExponentialRetry,
    Perpetual,
    Retry,
    TaskArgument,
    TaskKey,
    TaskLogger,
    Timeout,
)
from .execution import Execution
from .registration import UnknownTaskError
from .registry import WorkerInfo
from .shadow import Shadow
from .snapshot import Snapshot, SnapshotTask
from .strikes import Strike
from .task import Task
from .worker import Worker

__all__ = [
    "BatchError",
    "ConcurrencyLimit",
    "Cron",
    "CurrentExecution",
    "CurrentShadow",
    "CurrentWorker",
    "Dependency",
    "DependencyError",
    "Depends",
    "Execution",
    "ExponentialRetry",
    "Logged",
    "Perpetual",
    "Retry",
    "Shadow",
    "Snapshot",
    "SnapshotTask",
    "Strike",
    "Task",
    "TaskArgument",
    "TaskKey",
    "TaskLogger",
    "Timeout",
    "UnknownTaskError",
    "Worker",
    "WorkerInfo",
    "__version__",
]

"""shadows: a distributed background-task system for Python on Redis streams."""

from shadows._version import __version__
from shadows.behaviours import (
    ConcurrencyLimit,
    Cooldown,
    Cron,
    CurrentExecution,
    CurrentShadow,
    CurrentWorker,
    Debounce,
    Dependency,
    DependencyError,
    Depends,
    ExponentialRetry,
    Perpetual,
    Progress,
    RateLimit,
    Retry,
    TaskArgument,
    TaskKey,
    TaskLogger,
    Timeout,
)
from shadows.core.annotations import Logged
from shadows.core.execution import Execution
from shadows.core.state import (
    ExecutionCancelled,
    ExecutionEvent,
    ExecutionProgress,
    ExecutionState,
    RemoteError,
    ResultError,
    ResultTooLarge,
)
from shadows.operations.registry import WorkerInfo
from shadows.operations.snapshot import Snapshot, SnapshotTask
from shadows.operations.strikes import Strike
from shadows.producer.agenda import Agenda
from shadows.producer.batch import BatchError
from shadows.producer.registration import UnknownTaskError
from shadows.producer.shadow import Shadow
from shadows.producer.task import Task
from shadows.worker.heartbeat import WorkerNameTaken
from shadows.worker.worker import Worker

__all__ = [
    "Agenda",
    "BatchError",
    "ConcurrencyLimit",
    "Cooldown",
    "Cron",
    "CurrentExecution",
    "CurrentShadow",
    "CurrentWorker",
    "Debounce",
    "Dependency",
    "DependencyError",
    "Depends",
    "Execution",
    "ExecutionCancelled",
    "ExecutionEvent",
    "ExecutionProgress",
    "ExecutionState",
    "ExponentialRetry",
    "Logged",
    "Perpetual",
    "Progress",
    "RateLimit",
    "RemoteError",
    "ResultError",
    "ResultTooLarge",
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
    "WorkerNameTaken",
    "__version__",
]

"""Dependencies a task declares as parameter defaults."""

from .base import Context, Dependency, DependencyError, TaskPlan, plan_for, resolve_arguments
from .concurrency import ConcurrencyLimit
from .context import (
    CurrentExecution,
    CurrentShadow,
    CurrentWorker,
    TaskArgument,
    TaskKey,
    TaskLogger,
)
from .functional import Dependent, Depends
from .perpetual import Cron, Perpetual
from .retry import ExponentialRetry, Retry
from .timeout import Timeout

__all__ = [
    "ConcurrencyLimit",
    "Context",
    "Cron",
    "CurrentExecution",
    "CurrentShadow",
    "CurrentWorker",
    "Dependency",
    "DependencyError",
    "Dependent",
    "Depends",
    "ExponentialRetry",
    "Perpetual",
    "Retry",
    "TaskArgument",
    "TaskKey",
    "TaskLogger",
    "TaskPlan",
    "Timeout",
    "plan_for",
    "resolve_arguments",
]

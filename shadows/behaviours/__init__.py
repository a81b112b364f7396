"""Dependencies a task declares as parameter defaults (the public names; modules inside
``shadows`` import the submodules, never this package, which names the shadow and worker)."""

from shadows.behaviours.base import (
    Context,
    Dependency,
    DependencyError,
    TaskPlan,
    plan_for,
    resolve_arguments,
)
from shadows.behaviours.concurrency import ConcurrencyLimit
from shadows.behaviours.context import (
    CurrentExecution,
    TaskArgument,
    TaskKey,
    TaskLogger,
)
from shadows.behaviours.current import CurrentShadow, CurrentWorker
from shadows.behaviours.flow import Cooldown, Debounce, RateLimit
from shadows.behaviours.functional import Dependent, Depends
from shadows.behaviours.perpetual import Cron, Perpetual
from shadows.behaviours.progress import Progress
from shadows.behaviours.retry import ExponentialRetry, Retry
from shadows.behaviours.timeout import Timeout

__all__ = [
    "ConcurrencyLimit",
    "Context",
    "Cooldown",
    "Cron",
    "CurrentExecution",
    "CurrentShadow",
    "CurrentWorker",
    "Debounce",
    "Dependency",
    "DependencyError",
    "Dependent",
    "Depends",
    "ExponentialRetry",
    "Perpetual",
    "Progress",
    "RateLimit",
    "Retry",
    "TaskArgument",
    "TaskKey",
    "TaskLogger",
    "TaskPlan",
    "Timeout",
    "plan_for",
    "resolve_arguments",
]

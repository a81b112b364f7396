"""Dependencies a task declares as parameter defaults."""

from .base import Context, Dependency, DependencyError, TaskPlan, plan_for, resolve_arguments
from .retry import ExponentialRetry, Retry

__all__ = [
    "Context",
    "Dependency",
    "DependencyError",
    "ExponentialRetry",
    "Retry",
    "TaskPlan",
    "plan_for",
    "resolve_arguments",
]

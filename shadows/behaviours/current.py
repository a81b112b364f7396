"""``CurrentShadow()`` and ``CurrentWorker()``, typed as the objects the task receives.

The only module of ``behaviours`` that names :class:`~shadows.Shadow` and
:class:`~shadows.Worker` (for types only): they are defined above this layer, so nothing
below the public package ``shadows.behaviours`` imports this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from shadows.behaviours.context import CurrentShadowDependency, CurrentWorkerDependency

if TYPE_CHECKING:
    from shadows.producer.shadow import Shadow
    from shadows.worker.worker import Worker


def CurrentShadow() -> Shadow:
    """The :class:`~shadows.Shadow` the task was scheduled on (to schedule more work)."""
    return cast("Shadow", CurrentShadowDependency())


def CurrentWorker() -> Worker:
    """The :class:`~shadows.Worker` running the task."""
    return cast("Worker", CurrentWorkerDependency())

"""Testing helpers for applications built on shadows (the pytest plugin is ``plugin``)."""

from shadows.testing.asserts import (
    assert_no_tasks,
    assert_task_count,
    assert_task_not_scheduled,
    assert_task_scheduled,
)

__all__ = [
    "assert_no_tasks",
    "assert_task_count",
    "assert_task_not_scheduled",
    "assert_task_scheduled",
]

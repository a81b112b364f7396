"""Submitting a call of a debounced task (see :class:`~shadows.Debounce`).

The debounce acts in the producer, when the call is submitted, so that a burst of
submissions never becomes more than one message: the DEBOUNCE script either folds the
call into the burst whose run still waits in the queue, or opens a new burst under a
fresh key. A worker runs the burst's one message like any other. For the same reason a
``[task.NAME] debounce`` table is applied here, by every producer whose settings hold
it, not by the workers alone.
"""

from __future__ import annotations

import uuid
from typing import Protocol, TypeAlias

from shadows.behaviours.base import TaskPlan, task_arguments
from shadows.behaviours.flow import Debounce, milliseconds
from shadows.core.execution import Execution, from_ms, now_ms
from shadows.core.keys import Keys
from shadows.core.link import Link
from shadows.core.serialization import Payloads
from shadows.operations.instrumentation import producing
from shadows.operations.metrics import task_added, task_debounced
from shadows.settings.loading import Loaded
from shadows.settings.model import DebounceTable
from shadows.settings.overrides import debounce_from

#: The ``[task.NAME] debounce`` tables of a producer's settings, by task name in lower
#: case: where the table is (for messages) and the table.
Tables: TypeAlias = dict[str, tuple[str, DebounceTable]]


class Shadow(Protocol):
    """What a debounced submission needs of its shadow."""

    name: str
    keys: Keys
    payloads: Payloads
    #: The open burst of each bucket, as this producer last saw it.
    open_bursts: dict[str, str]
    #: The debounce tables of the settings the shadow was made from.
    debounce_tables: Tables

    def link(self) -> Link: ...


#: Open bursts a producer remembers (by bucket) before it forgets them all.
KNOWN_BURSTS = 10_000

#: How often a call retries after learning that another producer opened a new burst.
ATTEMPTS = 5


def bucket(debounce: Debounce, execution: Execution) -> str:
    """The burst ``execution`` belongs to: its task, or its task and scope argument."""
    arguments = task_arguments(execution) if debounce.scope is not None else {}
    try:
        return debounce.bucket(execution.function_name, arguments)
    except KeyError as error:
        raise ValueError(error.args[0]) from None


def tables(loaded: Loaded) -> Tables:
    """The debounce tables of ``loaded`` (read once, when a shadow is made)."""
    return {
        spelled.lower(): (loaded.table_origin(spelled), table.debounce)
        for spelled, table in loaded.settings.task.items()
        if table.debounce is not None
    }


class Configured(Protocol):
    """A producer with the debounce tables of its settings."""

    @property
    def debounce_tables(self) -> Tables: ...


def debounce_of(shadow: Configured, plan: TaskPlan, name: str) -> Debounce | None:
    """The :class:`Debounce` of the task of ``plan``: its own, with its ``[task.NAME]``
    table over it. Raises ``ValueError`` naming the table when the two cannot make one."""
    own = plan.find(Debounce)
    tables = shadow.debounce_tables
    entry = tables.get(name.lower()) if tables else None
    if entry is None:
        return own
    where, table = entry
    try:
        return debounce_from(table, own)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


async def submit(shadow: Shadow, execution: Execution, debounce: Debounce, mode: str) -> str:
    """Fold ``execution`` into its open burst or open one; returns ``scheduled`` for a
    new burst, ``debounced`` for a call folded into one. ``execution.key`` becomes the
    key of the burst's run."""
    if mode != "add":
        raise ValueError(
            f"{execution.function_name} is debounced: its calls are added, the debounce "
            "chooses their key (replace() does not apply)"
        )
    with producing(shadow.name, execution, mode) as extra:
        return await _submit(shadow, execution, debounce, extra)


async def _submit(
    shadow: Shadow, execution: Execution, debounce: Debounce, extra: dict[str, str]
) -> str:
    name = bucket(debounce, execution)
    keys = shadow.keys
    known = shadow.open_bursts
    fresh = f"{name}~{uuid.uuid4().hex[:16]}"
    settle = milliseconds(debounce.settle)
    max_wait = -1 if debounce.max_wait is None else milliseconds(debounce.max_wait)
    execution.key = fresh
    fields = execution.to_message(shadow.payloads, extra=extra).fields()
    link = shadow.link()
    script = link.flow.debounce
    for _ in range(ATTEMPTS):
        expected = known.get(name, "")
        names = [keys.stream, keys.queue, keys.debounce(name)]
        names += [keys.run(expected), keys.parked(expected), keys.run(fresh), keys.parked(fresh)]
        args = [expected, fresh, now_ms(), settle, max_wait, debounce.keep, *fields]
        if link.lane is not None:  # consecutive adds: one connection kept aside
            reply = await link.lane.call(script, names, args)
        else:
            reply = await script(keys=names, args=args)
        state, key, *due = reply
        key = key.decode() if isinstance(key, bytes) else str(key)
        if len(known) >= KNOWN_BURSTS and name not in known:
            known.clear()
        known[name] = key
        if state in (b"stale", "stale"):
            continue
        execution.key, execution.when = key, from_ms(int(due[0]))
        if state in (b"opened", "opened"):
            task_added(shadow.name, execution.function_name)
            return "scheduled"
        task_debounced(shadow.name, execution.function_name)
        return "debounced"
    raise RuntimeError(f"{name}: the open debounce burst kept changing; try again")

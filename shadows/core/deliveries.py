"""Counting deliveries for poison protection, in the run record.

Redis's own delivery count (``XPENDING``) misses a worker restarted under the same name
(containers keep their hostname and PID 1): it takes its own pending messages back
without a new delivery, so a task that kills its worker would run again at every
restart. Instead, the scripts that hand a message to a worker (READ, START: every
recovered or reclaimed message passes through START before it runs) count it in the run
record, once per *worker run* (``instance``, new each time a worker starts running):
reconnections, stalls and retried calls of one worker run never count twice, a restart
under the same name does. A delivery handed back without running (a full concurrency
pool, a stopping worker) is taken off again.

A task that kills its worker takes the worker's other tasks down with it, and a worker
restarted under the same name takes them all back together: counted alike, they would
all end as poison. So a *suspect*, a message whose earlier deliveries (at least
:func:`suspect_after`, the last to another worker run) were never settled, runs alone:
START takes it only when the worker runs nothing else, and takes nothing more with it
(the others wait in the worker's pending list, uncounted), and the worker reads nothing
else until it ends. Only the task that kills its worker keeps being counted; a neighbour
is counted at most ``suspect_after`` times with it, then runs alone and ends. After one
death (a plain crash), messages are not suspects yet: they all run again at once.

The Lua side is ``core/scripts/deliveries.lua``, prepended to START, ACQUIRE and RELEASE.
"""

from __future__ import annotations

import uuid


def suspect_after(max_deliveries: int) -> int:
    """Unsettled deliveries after which a message runs alone: two (one crash is not
    suspicious), fewer when the limit is lower (a neighbour must stay under it)."""
    return max(1, min(2, max_deliveries - 1))


def new_instance() -> str:
    """A token for one worker run (deliveries to it are counted once)."""
    return uuid.uuid4().hex

"""``Perpetual`` and ``Cron``: tasks that schedule their own next run."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from cronsim import CronSim, CronSimError

from shadows.behaviours.base import Context, Dependency

#: The @-keywords of classic cron, spelled out for the cron library.
CRON_KEYWORDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class Perpetual(Dependency):
    """Run the task again ``every`` after each run, success or failure, under its key.

    Inside the task: ``perpetual.cancel()`` ends the chain, ``perpetual.perpetuate(...)``
    sets the next run's arguments, and ``perpetual.every`` may be changed. The next run is
    due ``every`` after this run was due (so the cadence does not drift), or at once when
    that moment has passed. ``every`` must be positive: a zero interval would run the task
    back to back for ever. With ``automatic=True``, every worker that starts schedules the
    task (key = task name) if it is not already scheduled: one chain however many workers.
    """

    single = True

    def __init__(self, every: timedelta, automatic: bool = False) -> None:
        self.every = every
        self._chain(automatic)

    def _chain(self, automatic: bool) -> None:
        self.automatic = automatic
        self.cancelled = False
        self.changed = False
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}

    @property
    def every(self) -> timedelta:
        """The interval between the due times of two runs."""
        return self._every

    @every.setter
    def every(self, every: timedelta) -> None:
        if not isinstance(every, timedelta) or every <= timedelta(0):
            raise ValueError(
                f"Perpetual(every=...) must be a positive timedelta, not {every!r}: a task "
                "that runs again at once, for ever, would keep a worker busy"
            )
        self._every = every

    async def resolve(self, context: Context, parameter: str) -> Any:
        bound = copy.copy(self)
        bound.cancelled = False
        bound.changed = False
        bound.args = context.execution.args
        bound.kwargs = dict(context.execution.kwargs)
        return bound

    def cancel(self) -> None:
        """Do not schedule another run."""
        self.cancelled = True

    def perpetuate(self, *args: Any, **kwargs: Any) -> None:
        """Use these arguments for the next run."""
        self.args = args
        self.kwargs = kwargs
        self.changed = True

    def next_run(self, due: datetime, now: datetime) -> datetime:
        """When the run after one due at ``due`` should happen."""
        return max(due + self.every, now)

    def first_run(self, now: datetime) -> datetime:
        """When an automatic chain starts."""
        return now

    def describe(self) -> str:
        return f"Perpetual(every={self.every})"

    def __repr__(self) -> str:
        return f"Perpetual(every={self.every!r}, automatic={self.automatic})"


class Cron(Perpetual):
    """Run the task at the moments a cron ``expression`` matches, in time zone ``tz``.

    Standard five-field expressions (``*/5 * * * *``, ``0 9 * * MON-FRI``) and the
    keywords ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``.
    """

    def __init__(self, expression: str, automatic: bool = False, tz: tzinfo = UTC) -> None:
        self._every = timedelta(0)  # unused: the expression decides
        self._chain(automatic)
        self.expression = expression
        self.tz = tz
        self._spelled = CRON_KEYWORDS.get(expression.strip().lower(), expression)
        try:
            CronSim(self._spelled, datetime.now(tz))
        except (CronSimError, ValueError) as error:
            raise ValueError(f"Invalid cron expression {expression!r}: {error}") from None

    def following(self, moment: datetime) -> datetime:
        """The first match strictly after ``moment``."""
        return next(iter(CronSim(self._spelled, moment.astimezone(self.tz))))

    def next_run(self, due: datetime, now: datetime) -> datetime:
        return self.following(max(due, now))

    def first_run(self, now: datetime) -> datetime:
        return self.following(now)

    def describe(self) -> str:
        return f"Cron({self.expression!r})"

    def __repr__(self) -> str:
        return f"Cron({self.expression!r}, automatic={self.automatic}, tz={self.tz!r})"

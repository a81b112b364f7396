"""Deliberately broken workers, to prove that the verifier sees what it must see.

``python scripts/chaos --sabotage MODE`` sets ``$CHAOS_SABOTAGE`` for the workers, and
:mod:`chaos.tasks` installs the sabotage below when the workers import it. A sabotaged run
must FAIL with the matching violation:

* ``no-fencing``: a worker that cannot renew a claim keeps running the task (overlapping
  runs once another worker reclaims the message);
* ``drop``: one message in 30 is acknowledged without running (lost tasks);
* ``early``: the scheduler moves tasks 1.5 s before they are due (early runs).

Never set this outside the chaos suite.
"""

from __future__ import annotations

import logging
import random
from typing import Any

VARIABLE = "CHAOS_SABOTAGE"
MODES = ("no-fencing", "drop", "early")

logger = logging.getLogger("chaos.sabotage")


def install(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown sabotage {mode!r}; choose from {', '.join(MODES)}")
    logger.warning("SABOTAGE %s installed: this worker is broken on purpose", mode)
    if mode == "no-fencing":
        from shadows.worker.dispatch import Dispatcher

        def lose(self: Dispatcher, message_id: str, reason: str) -> None:
            self.leases.forget(message_id)  # no cancellation: the task runs on

        Dispatcher.lose = lose  # type: ignore[method-assign]
    elif mode == "drop":
        from shadows.worker.runner import Runner

        original = Runner.run

        async def run(self: Runner, message: Any) -> None:
            if random.random() < 1 / 30:
                await self.outcomes.finish(message, "completed")
                return
            await original(self, message)

        Runner.run = run  # type: ignore[method-assign]
    else:
        from shadows.core.execution import now_ms
        from shadows.worker import scheduler

        def early() -> int:
            return now_ms() + 1500

        setattr(scheduler, "now_ms", early)  # noqa: B010

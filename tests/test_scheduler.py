"""The scheduler loop (:mod:`shadows.worker.scheduler`) rides out errors that are not
outages as such."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest
from redis.exceptions import NoScriptError

import shadows.worker.scheduler as scheduler
from conftest import wait_for
from shadows import Shadow
from shadows.core.backend import Backend


async def noted(label: str) -> None: ...


async def test_the_scheduler_outlives_a_script_missing_after_a_failover(
    shadow: Shadow, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An error that is not an outage by CONNECTION_ERRORS (here NoScriptError: after a
    cluster failover the promoted replica has no scripts, Redis does not replicate SCRIPT
    LOAD) used to end the loop, a background task, without a word: due work was never
    moved again while everything else went on (the scheduled tasks left unrun in
    test_a_worker_rides_out_a_failover[failover])."""
    real = scheduler.move_due
    failures = 0

    async def failing_once(shard: Backend, now: int) -> tuple[int, float]:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise NoScriptError("No matching script. Please use EVAL.")
        return await real(shard, now)

    monkeypatch.setattr(scheduler, "move_due", failing_once)
    shadow.register(noted)
    await shadow.add(noted, when=datetime.now(UTC))("due")
    stopping, wake = asyncio.Event(), asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="shadows.worker"):
        loop = asyncio.create_task(
            scheduler.run_scheduler(lambda: [shadow], 0.05, 0.1, stopping, wake)
        )
        try:

            async def moved() -> bool:
                return bool(await shadow.client.xlen(shadow.keys.stream))

            await wait_for(moved, 10, "the due task to reach the stream")
            assert not loop.done(), "the loop must go on"
            assert await shadow.client.zcard(shadow.keys.queue) == 0
        finally:
            stopping.set()
            await asyncio.wait_for(loop, 5)
    assert failures == 1
    assert "Cannot move due work" in caplog.text

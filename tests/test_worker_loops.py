"""A worker's background loops are only awaited when it stops: one that ends early on an
unexpected error is logged when it happens (see :mod:`shadows.worker.loops`)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conftest import wait_for
from shadows import Shadow, Worker
from shadows.worker.leases import Leases


async def test_a_background_loop_that_fails_is_logged_at_once(
    shadow: Shadow, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: Leases) -> None:
        raise RuntimeError("lease renewal broke")

    monkeypatch.setattr(Leases, "run", broken)
    with caplog.at_level(logging.ERROR, logger="shadows.worker"):
        async with Worker(shadow) as worker:
            running = asyncio.create_task(worker.run_forever())
            try:
                await wait_for(lambda: "lease renewal broke" in caplog.text, 10, "the log")
                assert not running.done(), "the worker itself goes on"
            finally:
                worker.stop()
                await asyncio.wait_for(running, 10)
    (record,) = [r for r in caplog.records if "lease renewal broke" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert ":leases ended on RuntimeError" in record.getMessage()
    assert record.exc_info is not None

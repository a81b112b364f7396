"""shadows, installed from this repository (editable) into its own environment."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from recorder import record

from adapters.base import Adapter, Producer, Unsupported, package_version
from shadows import Shadow, Worker

NAME = "bench"


async def noop(n: int) -> None:
    record(n)


class ShadowsProducer(Producer):
    def __init__(self, shadow: Shadow) -> None:
        self.shadow = shadow

    async def send(self, n: int) -> None:
        await self.shadow.add(noop)(n)

    async def send_at(self, n: int, when: float) -> None:
        await self.shadow.add(noop, when=datetime.fromtimestamp(when, UTC))(n)

    async def send_many(self, ns: list[int]) -> None:
        # No batch API yet. When one lands, use it: docket's shape (``call`` building the
        # calls, ``add_many`` sending them) is tried first, then a plain list of argument
        # tuples.
        add_many: Any = getattr(self.shadow, "add_many", None)
        if add_many is None:
            raise Unsupported(SHADOWS_NO_BATCH)
        call: Any = getattr(self.shadow, "call", None)
        try:
            if call is not None:
                await add_many([call(noop)(n) for n in ns])
            else:
                await add_many(noop, [(n,) for n in ns])
        except TypeError as error:
            raise Unsupported(
                f"Shadow.add_many exists but this adapter does not know how to call it "
                f"({error}); update benchmarks/adapters/shadows.py"
            ) from error

    async def close(self) -> None:
        await self.shadow.__aexit__(None, None, None)


SHADOWS_NO_BATCH = "Shadow has no batch API (add_many) yet"


class ShadowsAdapter(Adapter):
    name = "shadows"
    notes = ()

    def version(self) -> str:
        return package_version("shadow-task")

    def batch_support(self) -> str | None:
        return None if hasattr(Shadow, "add_many") else SHADOWS_NO_BATCH

    async def open_producer(self, url: str) -> Producer:
        shadow = Shadow(name=NAME, url=url)
        await shadow.__aenter__()
        shadow.register(noop)
        return ShadowsProducer(shadow)

    def run_worker(self, url: str, concurrency: int, scheduling: bool) -> None:
        logging.getLogger("shadows").setLevel(logging.WARNING)

        async def run() -> None:
            async with Shadow(name=NAME, url=url) as shadow:
                shadow.register(noop)
                async with Worker(shadow, concurrency=concurrency) as worker:
                    await worker.run_forever()

        asyncio.run(run())


ADAPTER = ShadowsAdapter()

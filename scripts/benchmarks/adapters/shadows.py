"""shadows, installed from this repository (editable) into its own environment."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from recorder import record

from adapters.base import Adapter, Producer, package_version
from shadows import Shadow, Worker

NAME = "bench"


async def noop(n: int) -> None:
    record(n)


class ShadowsProducer(Producer):
    def __init__(self, shadow: Shadow) -> None:
        self.shadow = shadow
        self.task = shadow.task(noop)  # what @shadow.task gives

    async def send(self, n: int) -> None:
        await self.shadow.add(noop)(n)

    async def send_declared(self, n: int) -> None:
        await self.task.schedule(n)

    async def send_at(self, n: int, when: float) -> None:
        await self.shadow.add(noop, when=datetime.fromtimestamp(when, UTC))(n)

    async def send_many(self, ns: list[int]) -> None:
        async with self.shadow.batch() as batch:
            for n in ns:
                batch.add(noop)(n)

    async def close(self) -> None:
        await self.shadow.__aexit__(None, None, None)


class ShadowsAdapter(Adapter):
    name = "shadows"
    notes = ()

    def version(self) -> str:
        return package_version("shadow-task")

    def batch_support(self) -> str | None:
        return None

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

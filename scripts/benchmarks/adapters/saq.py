"""saq with its Redis queue."""

from __future__ import annotations

import asyncio
from typing import Any

from recorder import record
from saq import Queue, Worker

from adapters.base import Adapter, Producer, package_version

QUEUE = "bench"


async def noop(ctx: Any, *, n: int) -> None:
    record(n)


class SaqProducer(Producer):
    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    async def send(self, n: int) -> None:
        await self.queue.enqueue("noop", n=n)

    async def send_at(self, n: int, when: float) -> None:
        await self.queue.enqueue("noop", n=n, scheduled=int(when))

    async def close(self) -> None:
        await self.queue.disconnect()


class SaqAdapter(Adapter):
    name = "saq"
    notes = ("scheduled= takes whole epoch seconds; the worker polls for due jobs every 1 s",)

    def version(self) -> str:
        return package_version("saq")

    def batch_support(self) -> str | None:
        return "no batch enqueue API (Queue.batch() only groups jobs for abort)"

    async def open_producer(self, url: str) -> Producer:
        queue = Queue.from_url(url, name=QUEUE)
        await queue.connect()
        return SaqProducer(queue)

    def run_worker(self, url: str, concurrency: int, scheduling: bool) -> None:
        async def run() -> None:
            queue = Queue.from_url(url, name=QUEUE)
            await queue.connect()
            worker = Worker(queue, functions=[("noop", noop)], concurrency=concurrency)
            await worker.start()

        asyncio.run(run())


ADAPTER = SaqAdapter()

"""streaq (Redis streams, anyio, coredis)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from recorder import record
from streaq import Worker

from adapters.base import Adapter, Producer, package_version

QUEUE = "bench"


async def noop(n: int) -> None:
    record(n)


def make_worker(url: str, concurrency: int = 16) -> tuple[Worker[Any], Any]:
    worker: Worker[Any] = Worker(redis_url=url, concurrency=concurrency, queue_name=QUEUE)
    return worker, worker.task(noop)


class StreaqProducer(Producer):
    def __init__(self, worker: Worker[Any], task: Any) -> None:
        self.worker = worker
        self.task = task

    async def send(self, n: int) -> None:
        await self.task.enqueue(n)

    async def send_at(self, n: int, when: float) -> None:
        await self.task.enqueue(n).start(schedule=datetime.fromtimestamp(when, UTC))

    async def send_many(self, ns: list[int]) -> None:
        await self.worker.enqueue_many([self.task.enqueue(n) for n in ns])

    async def close(self) -> None:
        await self.worker.__aexit__(None, None, None)


class StreaqAdapter(Adapter):
    name = "streaq"
    notes = ()

    def version(self) -> str:
        return package_version("streaq")

    def batch_support(self) -> str | None:
        return None  # Worker.enqueue_many (one pipeline)

    async def open_producer(self, url: str) -> Producer:
        worker, task = make_worker(url)
        await worker.__aenter__()
        return StreaqProducer(worker, task)

    def run_worker(self, url: str, concurrency: int, scheduling: bool) -> None:
        worker, _ = make_worker(url, concurrency)
        worker.run_sync()


ADAPTER = StreaqAdapter()

"""arq (Redis sorted set + polling)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker
from recorder import record

from adapters.base import Adapter, Producer, package_version


async def noop(ctx: dict[str, Any], n: int) -> None:
    record(n)


class ArqProducer(Producer):
    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool

    async def send(self, n: int) -> None:
        await self.pool.enqueue_job("noop", n)

    async def send_at(self, n: int, when: float) -> None:
        await self.pool.enqueue_job("noop", n, _defer_until=datetime.fromtimestamp(when, UTC))

    async def close(self) -> None:
        await self.pool.aclose()


class ArqAdapter(Adapter):
    name = "arq"
    notes = (
        "worker: arq.worker.Worker(functions=[noop], max_jobs=concurrency).main() "
        "in-process; default poll_delay=0.5 s",
    )

    def version(self) -> str:
        return package_version("arq")

    async def open_producer(self, url: str) -> Producer:
        return ArqProducer(await create_pool(RedisSettings.from_dsn(url)))

    def run_worker(self, url: str, concurrency: int, scheduling: bool) -> None:
        async def run() -> None:
            worker = Worker(
                functions=[noop],  # type: ignore[list-item]
                redis_settings=RedisSettings.from_dsn(url),
                max_jobs=concurrency,
            )
            await worker.main()

        asyncio.run(run())


ADAPTER = ArqAdapter()

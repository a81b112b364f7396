"""taskiq with taskiq-redis's RedisStreamBroker (streams with acknowledgements)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from recorder import record
from taskiq import TaskiqScheduler
from taskiq.api import run_receiver_task, run_scheduler_task
from taskiq_redis import ListRedisScheduleSource, RedisStreamBroker

from adapters.base import Adapter, Producer, package_version

QUEUE = "bench"


async def noop(n: int) -> None:
    record(n)


def make_broker(url: str) -> tuple[RedisStreamBroker, Any]:
    broker = RedisStreamBroker(url, queue_name=QUEUE)
    task = broker.register_task(noop, task_name="noop")
    return broker, task


class TaskiqProducer(Producer):
    def __init__(self, broker: RedisStreamBroker, task: Any, url: str) -> None:
        self.broker = broker
        self.task = task
        self.url = url
        self.source: ListRedisScheduleSource | None = None

    async def send(self, n: int) -> None:
        await self.task.kiq(n)

    async def send_at(self, n: int, when: float) -> None:
        if self.source is None:
            self.source = ListRedisScheduleSource(self.url)
            await self.source.startup()
        await self.task.schedule_by_time(self.source, datetime.fromtimestamp(when, UTC), n)

    async def close(self) -> None:
        if self.source is not None:
            await self.source.shutdown()
        await self.broker.shutdown()


class TaskiqAdapter(Adapter):
    name = "taskiq"
    notes = (
        "broker: taskiq_redis.RedisStreamBroker (streams + acks, the at-least-once one; "
        "ListQueueBroker would be the simplest)",
        "worker: taskiq.api.run_receiver_task(max_async_tasks=concurrency) in-process, "
        "the programmatic form of `taskiq worker`",
        "lateness: ListRedisScheduleSource + TaskiqScheduler run in the worker process "
        "with update_interval=1s (default 60 s would re-read new schedules only once a "
        "minute); the scheduler still sends on whole-second ticks (default loop_interval)",
    )

    def version(self) -> str:
        return f"{package_version('taskiq')} + taskiq-redis {package_version('taskiq-redis')}"

    async def open_producer(self, url: str) -> Producer:
        broker, task = make_broker(url)
        await broker.startup()  # declares the stream's consumer group
        return TaskiqProducer(broker, task, url)

    def run_worker(self, url: str, concurrency: int, scheduling: bool) -> None:
        broker, _ = make_broker(url)

        async def run() -> None:
            jobs = [
                asyncio.create_task(
                    run_receiver_task(broker, max_async_tasks=concurrency, run_startup=True)
                )
            ]
            if scheduling:
                source = ListRedisScheduleSource(url)
                scheduler = TaskiqScheduler(broker, sources=[source])
                jobs.append(
                    asyncio.create_task(
                        run_scheduler_task(scheduler, interval=timedelta(seconds=1))
                    )
                )
            await asyncio.gather(*jobs)

        asyncio.run(run())


ADAPTER = TaskiqAdapter()

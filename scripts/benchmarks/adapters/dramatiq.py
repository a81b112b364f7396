"""dramatiq with its Redis broker; the worker is dramatiq.Worker run in-process."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO
from recorder import record

from adapters.base import Adapter, Producer, package_version


async def noop(n: int) -> None:
    record(n)


def make_actor(url: str) -> tuple[RedisBroker, Any]:
    broker = RedisBroker(url=url)
    # Needed for async actors: they run on the event loop thread this middleware starts.
    broker.add_middleware(AsyncIO())
    dramatiq.set_broker(broker)
    return broker, dramatiq.actor(noop, actor_name="noop", broker=broker)


class DramatiqProducer(Producer):
    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def send(self, n: int) -> None:
        self.actor.send(n)  # dramatiq's producer API is synchronous

    async def send_at(self, n: int, when: float) -> None:
        delay_ms = max(0, int((when - time.time()) * 1000))
        self.actor.send_with_options(args=(n,), delay=delay_ms)


class DramatiqAdapter(Adapter):
    name = "dramatiq"
    notes = (
        "async actor, so the AsyncIO middleware is added (dramatiq needs it for async)",
        "worker: dramatiq.Worker(broker, worker_threads=concurrency) in-process, the "
        "programmatic form of `dramatiq --processes 1 --threads C`",
        "enqueue is synchronous (actor.send); scheduling uses delay= (milliseconds)",
    )

    def version(self) -> str:
        return package_version("dramatiq")

    def batch_support(self) -> str | None:
        return "no batch enqueue API (group() sends each message separately)"

    async def open_producer(self, url: str) -> Producer:
        _, actor = make_actor(url)
        return DramatiqProducer(actor)

    def run_worker(self, url: str, concurrency: int, scheduling: bool) -> None:
        broker, _ = make_actor(url)
        broker.emit_after("process_boot")
        worker = dramatiq.Worker(broker, worker_threads=concurrency)
        worker.start()
        threading.Event().wait()


ADAPTER = DramatiqAdapter()

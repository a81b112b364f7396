"""Celery with the Redis broker and the threads pool; the worker runs in-process."""

from __future__ import annotations

from datetime import UTC, datetime

from celery import Celery
from recorder import record

from adapters.base import Adapter, Producer, package_version

app = Celery("bench")


@app.task(name="noop")
def noop(n: int) -> None:
    record(n)


class CeleryProducer(Producer):
    async def send(self, n: int) -> None:
        noop.delay(n)  # Celery's producer API is synchronous

    async def send_at(self, n: int, when: float) -> None:
        noop.apply_async((n,), eta=datetime.fromtimestamp(when, UTC))


class CeleryAdapter(Adapter):
    name = "celery"
    notes = (
        "sync task (Celery has no async tasks); enqueue is synchronous (task.delay)",
        "worker: app.worker_main(['worker', '--pool=threads', '--concurrency=C']) "
        "in-process (threads pool as asked; other settings default, incl. mingle/gossip)",
    )

    def version(self) -> str:
        return package_version("celery")

    def batch_support(self) -> str | None:
        return "no batch enqueue API (group() publishes one message per task)"

    async def open_producer(self, url: str) -> Producer:
        app.conf.broker_url = url
        return CeleryProducer()

    def run_worker(self, url: str, concurrency: int, scheduling: bool) -> None:
        app.conf.broker_url = url
        app.worker_main(
            ["worker", "--pool=threads", f"--concurrency={concurrency}", "--loglevel=WARNING"]
        )


ADAPTER = CeleryAdapter()

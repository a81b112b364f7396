"""docket (PyPI ``pydocket``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from docket import Docket, Worker
from recorder import record

from adapters.base import Adapter, Producer, package_version

NAME = "bench"


async def noop(n: int) -> None:
    record(n)


class DocketProducer(Producer):
    def __init__(self, docket: Docket) -> None:
        self.docket = docket

    async def send(self, n: int) -> None:
        await self.docket.add(noop)(n)

    async def send_at(self, n: int, when: float) -> None:
        await self.docket.add(noop, when=datetime.fromtimestamp(when, UTC))(n)

    async def send_many(self, ns: list[int]) -> None:
        await self.docket.add_many([self.docket.call(noop)(n) for n in ns])

    async def close(self) -> None:
        await self.docket.__aexit__(None, None, None)


TASKS = [noop]


class DocketAdapter(Adapter):
    name = "docket"
    notes = (
        "worker: docket.Worker.run(...), the entry point of the `docket worker` CLI, so "
        "the CLI's defaults apply (minimum_check_interval 100 ms; a bare Worker() "
        "defaults to 250 ms)",
    )

    def version(self) -> str:
        return package_version("pydocket")

    def batch_support(self) -> str | None:
        return None  # Docket.add_many (pipelined, default chunk_size=1000)

    async def open_producer(self, url: str) -> Producer:
        docket = Docket(name=NAME, url=url)
        await docket.__aenter__()
        docket.register(noop)
        return DocketProducer(docket)

    def run_worker(self, url: str, concurrency: int, scheduling: bool) -> None:
        asyncio.run(
            Worker.run(
                docket_name=NAME, url=url, concurrency=concurrency, tasks=["adapters.docket:TASKS"]
            )
        )


ADAPTER = DocketAdapter()

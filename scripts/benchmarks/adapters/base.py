"""What every library adapter provides to the harness.

An adapter is one small module per library, imported only inside that library's own
virtual environment. It defines one no-op task that calls :func:`recorder.record` with
its argument ``n`` (an int), a producer that enqueues that task, and a function that
runs one worker in the current process until it is killed.
"""

from __future__ import annotations


class Unsupported(Exception):
    """The library cannot do this workload; the message says why."""


class Producer:
    """Enqueues the benchmark's no-op task. One awaited call per task in ``send``."""

    async def send(self, n: int) -> None:
        raise NotImplementedError

    async def send_declared(self, n: int) -> None:
        """Enqueue the task through a declared task's handle (``@app.task``-style), one
        awaited call per task: the declarative API's cost over ``send``."""
        raise Unsupported("no separate declared-task API measured")

    async def send_at(self, n: int, when: float) -> None:
        """Schedule the task for the epoch second ``when`` (a whole second)."""
        raise Unsupported("no way to schedule a task at a given time")

    async def send_many(self, ns: list[int]) -> None:
        """Enqueue all of ``ns`` through the library's batch/pipeline API."""
        raise Unsupported("no batch enqueue API")

    async def close(self) -> None:
        return None


class Adapter:
    """One library. ``notes`` lists every non-default setting and why."""

    name = "?"
    notes: tuple[str, ...] = ()

    def version(self) -> str:
        raise NotImplementedError

    def batch_support(self) -> str | None:
        """``None`` if ``Producer.send_many`` works, else the reason it does not."""
        return "no batch enqueue API"

    def schedule_support(self) -> str | None:
        """``None`` if ``Producer.send_at`` works, else the reason it does not."""
        return None

    async def open_producer(self, url: str) -> Producer:
        raise NotImplementedError

    def run_worker(self, url: str, concurrency: int, scheduling: bool) -> None:
        """Run one worker in this process, forever (the harness is killed at the end).

        ``scheduling`` is true for the lateness workload, for libraries that need a
        separate scheduler component running to release tasks at their time.
        """
        raise NotImplementedError


def package_version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)

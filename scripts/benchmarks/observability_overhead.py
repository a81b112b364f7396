"""What observability costs per task.

    python scripts/benchmarks/observability_overhead.py hooks
    python scripts/benchmarks/observability_overhead.py drain \
        --url redis://localhost:6379/15 [--sdk]

``hooks`` times, in isolation, every instrumentation call a task goes through (the
producer's span and ``tasks_added``, the run's span, the start/end/outcome metrics, the
context carried to a follow-up), without and with an OpenTelemetry SDK installed.

``drain`` has one worker (concurrency 100, logging at WARNING) run 20,000 no-op tasks
and prints tasks per second: run it against this tree and against a tree without the
hooks (``PYTHONPATH=<other checkout>``) to compare end to end. ``--sdk`` installs an
SDK tracer provider (spans batched to an exporter that drops them) and meter provider.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from shadows import Shadow, Worker


async def noop() -> None:
    pass


def install_sdk() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def hooks(count: int) -> tuple[float, float]:
    """Microseconds per task in the instrumentation calls: (producer side, worker side).

    Each side is timed with and without its calls; the difference is their cost.
    """
    from shadows.core.execution import Execution
    from shadows.operations import instrumentation
    from shadows.operations.metrics import WorkerMetrics, task_added

    shadow = Shadow(name="overhead", url="memory://overhead")
    metrics = WorkerMetrics(shadow, "worker")
    execution = Execution(noop, (), {}, datetime.now(UTC), "key")
    message = execution.to_message(shadow.payloads)
    message.message_id = "1-0"

    def produce(instrumented: bool) -> float:
        started = time.perf_counter()
        if instrumented:
            for _ in range(count):
                with instrumentation.producing("overhead", execution, "add") as extra:
                    message.extra = extra
                task_added("overhead", "noop")
        else:
            for _ in range(count):
                message.extra = {}
        return time.perf_counter() - started

    def run(instrumented: bool) -> float:
        started = time.perf_counter()
        if instrumented:
            for _ in range(count):
                with instrumentation.running("overhead", "worker", execution, message) as span:
                    series = metrics.run_started(message)
                    elapsed = time.perf_counter() - started
                    metrics.run_ended(series, elapsed)
                    instrumentation.succeeded(span)
                    instrumentation.carry(span, None)
                metrics.finished(message, "completed", None)
        else:
            for _ in range(count):
                elapsed = time.perf_counter() - started
        return time.perf_counter() - started

    def cost(side: Callable[[bool], float]) -> float:
        # Interleaved, best of 7: the machine may be busy with other work.
        bare = min(side(False) for _ in range(7))
        instrumented = min(side(True) for _ in range(7))
        return (instrumented - bare) / count * 1e6

    return cost(produce), cost(run)


async def drain(url: str, count: int) -> float:
    logging.getLogger("shadows").setLevel(logging.WARNING)
    async with Shadow(name=f"overhead-{uuid.uuid4().hex[:8]}", url=url) as shadow:
        for start in range(0, count, 100):
            await asyncio.gather(*(shadow.add(noop)() for _ in range(min(100, count - start))))
        started = time.perf_counter()
        async with Worker(shadow, concurrency=100) as worker:
            await worker.run_until_finished()
        seconds = time.perf_counter() - started
        await shadow.client.delete(shadow.keys.stream)
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["hooks", "drain"])
    parser.add_argument("--url", default="redis://localhost:6379/15")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--sdk", action="store_true", help="install an OpenTelemetry SDK")
    arguments = parser.parse_args()
    if arguments.what == "hooks":
        producer, worker = hooks(arguments.tasks)
        print(f"without an SDK: {producer:.2f} us per add, {worker:.2f} us per run")
        install_sdk()
        producer, worker = hooks(arguments.tasks)
        print(f"with an SDK:    {producer:.2f} us per add, {worker:.2f} us per run")
        return
    if arguments.sdk:
        install_sdk()
    rate = asyncio.run(drain(arguments.url, arguments.tasks))
    print(f"drain: {arguments.tasks} tasks at {rate:,.0f}/s")


if __name__ == "__main__":
    main()

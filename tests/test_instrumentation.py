"""OpenTelemetry: spans captured with the SDK's in-memory exporter, metrics with its
in-memory reader."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from shadows import ExponentialRetry, Perpetual, Retry, Shadow, Worker
from shadows.operations.instrumentation import tracer


def _reset_tracing() -> None:
    # What opentelemetry's own test utilities do: the API allows one provider per process.
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider for this test only, exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_tracing()
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    _reset_tracing()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def greet(name: str) -> None:
    pass


async def test_a_run_is_a_span_named_after_the_task_linked_to_the_producer(
    shadow: Shadow, spans: InMemorySpanExporter
) -> None:
    with trace.get_tracer("test").start_as_current_span("request") as request:
        await shadow.add(greet, key="greet-1")("Ada")
    async with Worker(shadow, name="worker-a") as worker:
        await worker.run_until_finished()

    [producer] = named(spans, "add greet")
    [run] = named(spans, "greet")
    assert producer.kind is SpanKind.PRODUCER
    assert producer.parent is not None
    assert producer.parent.span_id == request.get_span_context().span_id
    assert producer.attributes is not None
    assert producer.attributes["shadows.task"] == "greet"
    assert producer.attributes["shadows.key"] == "greet-1"
    assert producer.attributes["shadows.shadow"] == shadow.name

    assert run.kind is SpanKind.CONSUMER
    assert run.attributes is not None
    assert {k: run.attributes[k] for k in run.attributes if k.startswith("shadows.")} == {
        "shadows.task": "greet",
        "shadows.key": "greet-1",
        "shadows.attempt": 1,
        "shadows.shadow": shadow.name,
        "shadows.worker": "worker-a",
        "shadows.outcome": "completed",
    }
    assert run.attributes["messaging.system"] == "shadows"
    assert run.attributes["messaging.destination.name"] == shadow.name
    assert run.status.status_code is StatusCode.UNSET
    # A new trace, linked to the span that scheduled it.
    assert run.parent is None
    assert run.context is not None and producer.context is not None
    assert run.context.trace_id != producer.context.trace_id
    [link] = run.links
    assert link.context.trace_id == producer.context.trace_id
    assert link.context.span_id == producer.context.span_id


async def test_a_failed_run_has_error_status_and_the_exception(
    shadow: Shadow, spans: InMemorySpanExporter
) -> None:
    async def explode() -> None:
        raise ValueError("boom")

    await shadow.add(explode)()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()

    [run] = named(spans, "explode")
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "ValueError: boom"
    assert run.attributes is not None
    assert run.attributes["shadows.outcome"] == "failed"
    [event] = run.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "boom"


async def test_each_retry_links_to_the_attempt_before_it(
    shadow: Shadow, spans: InMemorySpanExporter
) -> None:
    async def flaky(retry: Retry = Retry(attempts=3)) -> None:
        if retry.attempt < 3:
            raise RuntimeError(f"attempt {retry.attempt}")

    await shadow.add(flaky)()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()

    [producer] = named(spans, "add flaky")
    runs = sorted(named(spans, "flaky"), key=lambda span: span.start_time or 0)
    assert [run.attributes and run.attributes["shadows.attempt"] for run in runs] == [1, 2, 3]
    assert [run.attributes and run.attributes["shadows.outcome"] for run in runs] == [
        "retrying",
        "retrying",
        "completed",
    ]
    assert [run.status.status_code for run in runs] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    previous = [producer, runs[0], runs[1]]
    for run, before in zip(runs, previous, strict=True):
        [link] = run.links
        assert before.context is not None
        assert link.context.span_id == before.context.span_id


async def test_a_perpetual_chain_links_each_run_to_the_run_before(
    shadow: Shadow, spans: InMemorySpanExporter
) -> None:
    async def tick(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10))) -> None:
        pass

    await shadow.add(tick, key="ticker")()
    async with Worker(shadow, scheduling_resolution=timedelta(milliseconds=10)) as worker:
        await worker.run_at_most({"ticker": 3})

    runs = sorted(named(spans, "tick"), key=lambda span: span.start_time or 0)
    assert len(runs) >= 3
    for run, before in zip(runs[1:3], runs[:2], strict=True):
        [link] = run.links
        assert before.context is not None
        assert link.context.span_id == before.context.span_id


async def test_the_task_runs_inside_its_span_with_the_producers_baggage(
    shadow: Shadow, spans: InMemorySpanExporter
) -> None:
    seen: dict[str, Any] = {}

    async def inspect_context() -> None:
        seen["span"] = trace.get_current_span().get_span_context()
        seen["tenant"] = baggage.get_baggage("tenant")
        with trace.get_tracer("test").start_as_current_span("inner"):
            pass

    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        await shadow.add(inspect_context)()
    finally:
        context.detach(token)
    async with Worker(shadow) as worker:
        await worker.run_until_finished()

    [run] = named(spans, "inspect_context")
    [inner] = named(spans, "inner")
    assert run.context is not None
    assert seen["span"].span_id == run.context.span_id
    assert inner.parent is not None and inner.parent.span_id == run.context.span_id
    assert seen["tenant"] == "acme"


async def test_the_context_travels_in_the_message_fields(
    shadow: Shadow, spans: InMemorySpanExporter
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    with trace.get_tracer("test").start_as_current_span("request"):
        await shadow.add(greet, when=later, key="later")("Bob")
    fields = await shadow.client.hgetall(shadow.keys.parked("later"))
    [producer] = named(spans, "add greet")
    assert producer.context is not None
    traceparent = fields[b"traceparent"].decode()
    assert traceparent.startswith(
        f"00-{producer.context.trace_id:032x}-{producer.context.span_id:016x}-"
    )


async def test_without_an_sdk_nothing_is_added_to_messages_and_runs_still_work(
    shadow: Shadow,
) -> None:
    assert tracer() is None
    ran: list[str] = []

    async def remember(label: str) -> None:
        ran.append(label)
        assert not trace.get_current_span().get_span_context().is_valid

    later = datetime.now(UTC) + timedelta(milliseconds=100)
    await shadow.add(remember, when=later, key="quiet")("quiet")
    fields = await shadow.client.hgetall(shadow.keys.parked("quiet"))
    assert b"traceparent" not in fields
    async with Worker(shadow, scheduling_resolution=timedelta(milliseconds=10)) as worker:
        await worker.run_until_finished()
    assert ran == ["quiet"]


async def test_retries_work_with_tracing_on(shadow: Shadow, spans: InMemorySpanExporter) -> None:
    attempts: list[int] = []

    async def twice(
        retry: ExponentialRetry = ExponentialRetry(
            attempts=2, minimum_delay=timedelta(0), maximum_delay=timedelta(0)
        ),
    ) -> None:
        attempts.append(retry.attempt)
        raise ValueError("always")

    await shadow.add(twice)()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert attempts == [1, 2]
    assert [
        span.attributes and span.attributes["shadows.outcome"] for span in named(spans, "twice")
    ] == [
        "retrying",
        "failed",
    ]


def points(reader: InMemoryMetricReader, name: str, shadow: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
        if point.attributes.get("shadows.shadow") == shadow
    ]


async def test_counters_and_histograms_go_through_the_metrics_api(
    shadow: Shadow, metric_reader: InMemoryMetricReader
) -> None:
    async def fine() -> None:
        pass

    async def broken() -> None:
        raise RuntimeError("no")

    for _ in range(3):
        await shadow.add(fine)()
    await shadow.add(broken)()
    async with Worker(shadow, name="metered") as worker:
        await worker.run_until_finished()

    def total(name: str, task: str) -> Any:
        return sum(
            point.value
            for point in points(metric_reader, name, shadow.name)
            if point.attributes.get("shadows.task") == task
        )

    assert total("shadows.tasks.added", "fine") == 3
    assert total("shadows.tasks.started", "fine") == 3
    assert total("shadows.tasks.succeeded", "fine") == 3
    assert total("shadows.tasks.failed", "broken") == 1
    [duration] = [
        point
        for point in points(metric_reader, "shadows.task.duration", shadow.name)
        if point.attributes["shadows.task"] == "fine"
    ]
    assert duration.count == 3
    assert duration.attributes["shadows.worker"] == "metered"
    [lateness] = [
        point
        for point in points(metric_reader, "shadows.task.punctuality", shadow.name)
        if point.attributes["shadows.task"] == "broken"
    ]
    assert lateness.count == 1

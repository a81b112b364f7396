"""OpenTelemetry traces: a span per task run, linked to the span that scheduled it.

Everything goes through the OpenTelemetry API, so nothing is recorded until the
application installs an SDK ``TracerProvider``. Without one, this module costs a run one
provider look-up: no span, no attribute dictionary, no context extraction (the measured
figure is in ``docs/observability.md``).

* Producer: ``add <task>`` or ``replace <task>`` (kind PRODUCER) around the script call
  that stores the task. The current trace context is written into the message's extra
  fields with the global propagator (W3C ``traceparent``/``tracestate``, and ``baggage``
  when there is some), even without an SDK, so that a context received from upstream is
  passed on.
* Worker: ``<task>`` (kind CONSUMER) around resolving the dependencies and calling the
  function. It starts a new trace, with a *link* to the span that scheduled the message:
  a task may run hours after it was added, and retries and perpetual chains would
  otherwise make one trace grow for ever. A retry or the next run of a perpetual task
  carries the context of the run that scheduled it, so the links form a chain back to
  the original ``add``. Baggage from the producer is restored around the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context, attach, detach, get_current
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.trace import (
    Link,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
)
from opentelemetry.util.types import AttributeValue

from shadows._version import __version__
from shadows.core.keys import WORKER_GROUP

if TYPE_CHECKING:
    from shadows.core.execution import Execution, Message

SCOPE = "shadows"

#: Span attribute names (documented in docs/observability.md).
TASK = "shadows.task"
KEY = "shadows.key"
ATTEMPT = "shadows.attempt"
SHADOW = "shadows.shadow"
WORKER = "shadows.worker"
OUTCOME = "shadows.outcome"

_cached: tuple[TracerProvider, Tracer] | None = None
_NO_OP = (ProxyTracerProvider, NoOpTracerProvider)
_UNKNOWN = object()
#: A provider named by this variable is only created by the first look-up.
_FROM_ENVIRONMENT = OTEL_PYTHON_TRACER_PROVIDER in os.environ


def tracer() -> Tracer | None:
    """The tracer of the installed SDK, or ``None`` while the API is a no-op.

    Looked up on every call, so that a provider installed after import (or replaced in
    tests) takes effect at once. ``trace.get_tracer_provider()`` reads the environment
    each time no provider is set, which alone would cost a microsecond per task, so the
    module's global is read first (falling back on the public call should it go away).
    """
    global _cached
    provider: Any = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None and not _FROM_ENVIRONMENT:
        return None
    if provider is None or provider is _UNKNOWN:
        provider = trace.get_tracer_provider()
    if type(provider) in _NO_OP:
        return None
    if _cached is None or _cached[0] is not provider:
        _cached = (provider, provider.get_tracer(SCOPE, __version__))
    return _cached[1]


def producing(
    shadow: str, execution: Execution, mode: str
) -> AbstractContextManager[dict[str, str]]:
    """Around storing ``execution``: yields the extra message fields carrying the context."""
    active = tracer()
    if active is None:
        carrier: dict[str, str] = {}
        if get_current():  # a context received from upstream (a span, baggage) travels on
            propagate.inject(carrier)
        return nullcontext(carrier)
    return _producing(active, shadow, execution, mode)


@contextmanager
def _producing(
    active: Tracer, shadow: str, execution: Execution, mode: str
) -> Iterator[dict[str, str]]:
    carrier: dict[str, str] = {}
    attributes: dict[str, AttributeValue] = {
        TASK: execution.function_name,
        KEY: execution.key,
        ATTEMPT: execution.attempt,
        SHADOW: shadow,
        "messaging.system": SCOPE,
        "messaging.destination.name": shadow,
        "messaging.operation.type": "send",
        "messaging.operation.name": mode,
    }
    with active.start_as_current_span(
        f"{mode} {execution.function_name}", kind=SpanKind.PRODUCER, attributes=attributes
    ):
        propagate.inject(carrier)
        yield carrier


def running(
    shadow: str, worker: str, execution: Execution, message: Message
) -> AbstractContextManager[Span | None]:
    """The span of one run, current while it lasts (``None`` without an SDK)."""
    active = tracer()
    if active is None:
        return nullcontext(None)
    return _running(active, shadow, worker, execution, message)


@contextmanager
def _running(
    active: Tracer, shadow: str, worker: str, execution: Execution, message: Message
) -> Iterator[Span]:
    links: list[Link] = []
    parent = Context()
    if message.extra:
        scheduled = propagate.extract(message.extra)
        origin = trace.get_current_span(scheduled).get_span_context()
        if origin.is_valid:
            links.append(Link(origin))
        for name, value in baggage.get_all(scheduled).items():
            parent = baggage.set_baggage(name, value, parent)
    attributes: dict[str, AttributeValue] = {
        TASK: execution.function_name,
        KEY: execution.key,
        ATTEMPT: execution.attempt,
        SHADOW: shadow,
        WORKER: worker,
        "messaging.system": SCOPE,
        "messaging.destination.name": shadow,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.consumer.group.name": WORKER_GROUP,
        "messaging.message.id": message.message_id,
    }
    token = attach(parent)
    try:
        with active.start_as_current_span(
            execution.function_name, kind=SpanKind.CONSUMER, attributes=attributes, links=links
        ) as span:
            yield span
    finally:
        detach(token)


def succeeded(span: Span | None) -> None:
    if span is not None and span.is_recording():
        span.set_attribute(OUTCOME, "completed")


def failed(span: Span | None, error: BaseException, retrying: bool) -> None:
    """Mark the run failed: ERROR status, the exception recorded as an event."""
    if span is None or not span.is_recording():
        return
    span.set_attribute(OUTCOME, "retrying" if retrying else "failed")
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def cancelled(span: Span | None) -> None:
    if span is not None and span.is_recording():
        span.set_attribute(OUTCOME, "cancelled")


def carry(span: Span | None, follow: Message | None) -> bool:
    """Make the next message of a retry or a chain carry the context of this run; returns
    whether its fields changed (a signed message must then be sealed again).

    Call it while the run's span is current (its baggage travels too).
    """
    if span is None or follow is None or not span.get_span_context().is_valid:
        return False
    propagator = propagate.get_global_textmap()
    carrier = _without(follow.extra, propagator.fields)
    propagator.inject(carrier)
    follow.extra = carrier
    return True


def _without(fields: Mapping[str, str], names: set[str]) -> dict[str, str]:
    return {name: value for name, value in fields.items() if name not in names}

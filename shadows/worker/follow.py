"""The message that follows a run: the next attempt of a retried one, the next run of a
perpetual chain. Each is a new message of the same key, signed, placed by the COMPLETE
call that settles the run."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shadows.behaviours.base import plan_for
from shadows.behaviours.perpetual import Perpetual
from shadows.behaviours.retry import Retry
from shadows.core.execution import Execution, Message, now_ms, to_ms
from shadows.core.serialization import Payloads


def declared_retry(
    tasks: Mapping[str, Callable[..., Any]], payloads: Payloads, message: Message
) -> Message | None:
    """The next attempt of ``message`` under the ``Retry`` its task declares, if any."""
    function = tasks.get(message.function)
    retry = plan_for(function).find(Retry) if function is not None else None
    if retry is None:
        return None
    bound = copy.copy(retry)
    bound.attempt = message.attempt
    delay = bound.next_delay()
    if delay is None:
        return None
    return retried(payloads, message, delay)


def retried(payloads: Payloads, message: Message, delay: timedelta) -> Message:
    """The next attempt of ``message``, ``delay`` from now, signed."""
    retried = replace(
        message,
        attempt=message.attempt + 1,
        when_ms=now_ms() + int(delay.total_seconds() * 1000),
        extra=dict(message.extra),
        holds=[],
    )
    return payloads.seal(retried)


def next_run(
    payloads: Payloads, execution: Execution, message: Message, perpetual: Perpetual | None
) -> Message | None:
    """The next message of a perpetual chain, or ``None`` when there is none."""
    if perpetual is None or perpetual.cancelled:
        return None
    now = datetime.now(UTC)
    when = perpetual.next_run(execution.when, now)
    args, kwargs = message.args, message.kwargs
    if perpetual.changed:
        args, kwargs = payloads.encode(tuple(perpetual.args), dict(perpetual.kwargs))
    follow = replace(
        message,
        attempt=1,
        when_ms=to_ms(when),
        args=args,
        kwargs=kwargs,
        extra=dict(message.extra),
        holds=[],
    )
    return payloads.seal(follow)

"""Checked by mypy --strict in tests/test_typing.py: every ``type: ignore`` marks a call
that must be rejected (``--warn-unused-ignores`` fails if it is accepted), and every other
line must be accepted."""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from shadows import Execution, Retry, Shadow, Task

shadow = Shadow()


@shadow.task(retry=Retry(attempts=3), key="welcome-{customer_id}")
async def send_welcome_email(customer_id: int, name: str) -> None: ...


@shadow.task
def cleanup(days: int = 7) -> int:
    return days


async def accepted() -> None:
    handle: Task[[int, str], Coroutine[Any, Any, None]] = send_welcome_email
    execution: Execution = await send_welcome_email.schedule(12345, "Alice")
    await send_welcome_email.schedule(customer_id=1, name="Bob")
    await send_welcome_email.options(delay=timedelta(minutes=5)).schedule(1, "x")
    await send_welcome_email.options(key="k").replace(1, "x")
    await send_welcome_email(1, "direct")  # runs the function itself
    removed: int = cleanup(3)
    await cleanup.schedule()
    print(handle, execution, removed)


async def rejected() -> None:
    await send_welcome_email.schedule("not an int", "Alice")  # type: ignore[arg-type]
    await send_welcome_email.schedule(1)  # type: ignore[call-arg]
    await send_welcome_email.schedule(1, "x", "extra")  # type: ignore[call-arg]
    await send_welcome_email.options(delay=timedelta(seconds=1)).schedule(1, 2)  # type: ignore[arg-type]
    await send_welcome_email.schedule(1, nam="x")  # type: ignore[call-arg]
    text: str = cleanup()  # type: ignore[assignment]
    shadow.task(retry=3)  # type: ignore[call-overload]
    print(text)

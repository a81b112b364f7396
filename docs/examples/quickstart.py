"""The quick start, runnable anywhere: ``memory://`` needs no Redis server.

    python docs/examples/quickstart.py

Tasks are declared with ``@shadow.task`` on a module-level ``Shadow()``, which takes its
name and URL from the settings (``SHADOW_*`` variables, then ``shadows.toml``). Set
``SHADOW_URL=redis://localhost:6379/0`` to run the same flow on a real Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timedelta, timezone

from shadows import CurrentExecution, Execution, Retry, Shadow, Worker

os.environ.setdefault("SHADOW_URL", "memory://quickstart")  # no Redis server needed
os.environ.setdefault("SHADOW_NAME", "quickstart")

shadow = Shadow()  # no I/O here: it connects on first use
started = time.monotonic()


def stamp() -> str:
    return f"[{time.monotonic() - started:5.2f}s]"


@shadow.task
async def send_welcome_email(customer_id: int, name: str) -> None:
    print(f"{stamp()} Welcome, {name}! (customer {customer_id})")


@shadow.task(key="process-order-{order_id}")  # one task per order, however often scheduled
async def process_order(order_id: int) -> None:
    print(f"{stamp()} Processing order {order_id}")


@shadow.task(key="reminder-{customer_id}")
async def send_reminder(customer_id: int, message: str) -> None:
    print(f"{stamp()} Reminder for {customer_id}: {message}")


@shadow.task(retry=Retry(attempts=3, delay=timedelta(milliseconds=300)))
async def flaky_api_call(url: str, execution: Execution = CurrentExecution()) -> None:
    if execution.attempt < 3:
        print(f"{stamp()} {url} failed on attempt {execution.attempt}, will retry")
        raise ConnectionError("the API is having a bad day")
    print(f"{stamp()} {url} succeeded on attempt {execution.attempt}")


async def main() -> None:
    await shadow.clear()
    now = datetime.now(timezone.utc)

    # Immediate work, and work for two seconds from now
    await send_welcome_email.schedule(12345, "Alice")
    await send_welcome_email.options(delay=timedelta(seconds=2)).schedule(67890, "Bob")

    # The key template makes scheduling idempotent: the second one is ignored
    await process_order.schedule(1)
    await process_order.schedule(1)

    # Future work can be moved or cancelled by its key
    await send_reminder.options(when=now + timedelta(days=7)).schedule(
        42, "Your trial expires soon"
    )
    await send_reminder.options(delay=timedelta(seconds=1)).replace(42, "Thanks for upgrading!")
    await send_reminder.options(delay=timedelta(days=1)).schedule(43, "never sent")
    await shadow.cancel("reminder-43")

    # Retries: fails twice, succeeds on the third attempt
    await flaky_api_call.schedule("https://api.example.com/health")

    print(f"{stamp()} scheduled; starting a worker")
    async with Worker(shadow, concurrency=5) as worker:
        await worker.run_until_finished()
    print(f"{stamp()} all done: nothing is due, scheduled or running")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(main())

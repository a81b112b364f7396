"""The quick start, runnable anywhere: ``memory://`` needs no Redis server.

    python docs/examples/quickstart.py

Set ``SHADOW_URL=redis://localhost:6379/0`` to run the same flow on a real Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timedelta, timezone

from shadows import Retry, Shadow, Worker

started = time.monotonic()


def stamp() -> str:
    return f"[{time.monotonic() - started:5.2f}s]"


async def send_welcome_email(customer_id: int, name: str) -> None:
    print(f"{stamp()} Welcome, {name}! (customer {customer_id})")


async def process_order(order_id: int) -> None:
    print(f"{stamp()} Processing order {order_id}")


async def send_reminder(customer_id: int, message: str) -> None:
    print(f"{stamp()} Reminder for {customer_id}: {message}")


async def flaky_api_call(
    url: str, retry: Retry = Retry(attempts=3, delay=timedelta(milliseconds=300))
) -> None:
    if retry.attempt < 3:
        print(f"{stamp()} {url} failed on attempt {retry.attempt}, will retry")
        raise ConnectionError("the API is having a bad day")
    print(f"{stamp()} {url} succeeded on attempt {retry.attempt}")


async def main() -> None:
    url = os.environ.get("SHADOW_URL", "memory://")
    async with Shadow(name="quickstart", url=url) as shadows:
        await shadows.clear()
        now = datetime.now(timezone.utc)

        # Immediate work, and work for two seconds from now
        await shadows.add(send_welcome_email)(12345, "Alice")
        await shadows.add(send_welcome_email, when=now + timedelta(seconds=2))(67890, "Bob")

        # A custom key makes scheduling idempotent: the second add is ignored
        await shadows.add(process_order, key="process-order-1")(1)
        await shadows.add(process_order, key="process-order-1")(1)

        # Future work can be moved or cancelled by its key
        await shadows.add(send_reminder, when=now + timedelta(days=7), key="reminder-42")(
            42, "Your trial expires soon"
        )
        await shadows.replace(send_reminder, when=now + timedelta(seconds=1), key="reminder-42")(
            42, "Thanks for upgrading!"
        )
        await shadows.add(send_reminder, when=now + timedelta(days=1), key="reminder-43")(
            43, "never sent"
        )
        await shadows.cancel("reminder-43")

        # Retries: fails twice, succeeds on the third attempt
        await shadows.add(flaky_api_call)("https://api.example.com/health")

        print(f"{stamp()} scheduled; starting a worker")
        async with Worker(shadows, concurrency=5) as worker:
            await worker.run_until_finished()
        print(f"{stamp()} all done: nothing is due, scheduled or running")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(main())

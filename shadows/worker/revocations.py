"""Cancelling running work: how a worker learns that a task it runs was cancelled.

``shadow.cancel(key)`` on work a worker holds writes a durable revocation (``revoked``
in the run record, which lives as long as the run and expires with it) that the START,
ACQUIRE and COMPLETE scripts check atomically: a revoked message never starts, and a
revoked run places no retry, next perpetual run or successor, on whichever worker, even
after a crash or a Redis restart.
The same call appends ``revoke`` to the strike feed every worker already follows: the
worker running the task hears of it at once and cancels it there (no polling). After
every reload of the feed (an outage may have hidden entries), the worker checks the
durable revocations of what it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from shadows.core.message import Message
from shadows.core.state import Source

logger = logging.getLogger("shadows.worker")

#: How long (seconds) a revocation heard on the feed is remembered, for a message whose
#: delivery reply was still on its way when the revocation came.
REMEMBER = 60.0


class Revocations:
    """The revocations one worker acts on."""

    def __init__(
        self,
        source: Source,
        active: Mapping[str, asyncio.Task[None]],
        messages: Mapping[str, Message],
    ) -> None:
        self.source = source
        self._active = active
        self._messages = messages
        self._heard: dict[str, float] = {}
        #: Message ids whose task this worker cancelled because their key was revoked.
        self._cancelling: set[str] = set()

    def revoke(self, keys: Iterable[str]) -> None:
        """Cancel the tasks running ``keys`` here, and remember the keys a while."""
        now = time.monotonic()
        for old in [k for k, at in self._heard.items() if now - at > REMEMBER]:
            del self._heard[old]
        wanted = set(keys)
        self._heard.update(dict.fromkeys(wanted, now))
        for message_id, message in list(self._messages.items()):
            if message.key in wanted:
                self.cancel(message_id)

    def cancel(self, message_id: str) -> None:
        """Cancel the task of ``message_id`` (a :attr:`Message.ref`); it settles as
        cancelled (see :meth:`taken`)."""
        task = self._active.get(message_id)
        message = self._messages.get(message_id)
        if task is None or task.done() or message_id in self._cancelling:
            return
        self._cancelling.add(message_id)
        logger.warning(
            "Cancelling %s [key=%s]: it was cancelled",
            message.function if message else "task",
            message.key if message else "?",
        )
        task.cancel()

    def cancel_all(self, message_ids: Iterable[bytes | str]) -> None:
        """Cancel the tasks of the messages a background START found revoked."""
        for message_id in message_ids:
            self.cancel(message_id.decode() if isinstance(message_id, bytes) else message_id)

    def unstarted(
        self, messages: list[Message], cancelled: Iterable[Any]
    ) -> tuple[list[Message], list[Message]]:
        """``messages`` split into those to run and those START found revoked (logged:
        they are settled as cancelled without running)."""
        revoked = {m.decode() if isinstance(m, bytes) else str(m) for m in cancelled}
        if not revoked:
            return messages, []
        stopped = [m for m in messages if m.message_id in revoked]
        for message in stopped:
            logger.info("Not starting %s [key=%s]: cancelled", message.function, message.key)
        return [m for m in messages if m.message_id not in revoked], stopped

    def heard_any(self, messages: Iterable[Message]) -> bool:
        """Whether a message of a key revoked a moment ago is among ``messages``."""
        return any(self.heard(message.key) for message in messages)

    def heard(self, key: str) -> bool:
        """Whether ``key`` was revoked a moment ago (a message of it must not start)."""
        at = self._heard.get(key)
        return at is not None and time.monotonic() - at <= REMEMBER

    def taken(self, message_id: str) -> bool:
        """Whether the cancellation of ``message_id``'s task is a revocation (then the
        task settles it as cancelled rather than leaving it pending); forgets it."""
        if message_id in self._cancelling:
            self._cancelling.discard(message_id)
            return True
        return False

    async def check(self) -> None:
        """Cancel what runs here under a durable revocation (one round trip)."""
        running = {(message.shard, message.key) for message in self._messages.values()}
        if not running:
            return
        places = sorted(running)
        keys = [key for _, key in places]
        async with self.source.client.pipeline(transaction=False) as pipe:
            for shard, key in places:
                pipe.hexists(self.source.keys.of_shard(shard).run(key), "revoked")
            found = await pipe.execute()
        revoked = [key for key, marked in zip(keys, found, strict=True) if marked]
        if revoked:
            self.revoke(revoked)

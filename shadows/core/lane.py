"""A connection set aside for a producer's script calls sent one after another.

For every command, redis-py takes a connection out of its pool, records observability
figures, and puts the connection back. For a producer awaiting one ``add`` after another
that is about a sixth of the cost of each add (measured: 283 -> 232 µs per add on a
2-core machine; see ``docs/performance.md``). The lane keeps one connection out of the
pool and writes and reads it directly, through redis-py's own ``Connection`` methods,
while no other call is using it; a call made meanwhile (adds awaited concurrently) takes
the ordinary path through the pool, so concurrency is never serialised on the lane.

Errors are left to the ordinary path: a lost connection or an unknown script makes the
call again through redis-py's retrying, script-loading path (every script is idempotent,
so a call whose reply was lost may be repeated), and a cancelled call closes the lane's
connection, whose unread reply would otherwise be read by the next call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError


class Lane:
    """One pooled connection of ``client`` kept for consecutive script calls."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._connection: Any = None
        self._busy = False

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` like ``script(keys=keys, args=args)`` would."""
        if self._busy:
            return await script(keys=keys, args=args)
        self._busy = True
        try:
            return await self._call(script, keys, args)
        finally:
            self._busy = False

    async def _call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        connection = self._connection
        if connection is None:
            pool = self._client.connection_pool
            connection = self._connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        command = connection.pack_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            await connection.send_packed_command(command, check_health=False)
            return await connection.read_response()
        except NoScriptError:
            return await script(keys=keys, args=args)  # loads it again
        except (ConnectionError, TimeoutError, OSError):
            await self.close()
            return await script(keys=keys, args=args)
        except BaseException as error:
            if not isinstance(error, Exception):  # cancelled: the reply may still come
                await self.close()
            raise

    async def close(self) -> None:
        """Give the connection back to the pool, closed."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)
            await self._client.connection_pool.release(connection)

"""Calling scripts in ways a plain ``EVALSHA`` does not cover."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

#: Clients whose server lacks EVALSHA_RO (the in-process memory:// server, Redis < 7).
_WITHOUT_READ_ONLY: set[int] = set()


async def read_only(
    client: Redis | RedisCluster, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """Run ``script``, which only reads, with EVALSHA_RO: a user whose key permissions are
    read-only (``%R~``) may run it (Redis refuses EVALSHA on keys it may not write).
    Falls back to EVALSHA where the server has no EVALSHA_RO."""
    if id(client) in _WITHOUT_READ_ONLY:
        return await script(keys=list(keys), args=list(args), client=client)
    for loaded in (False, True):
        try:
            return await client.evalsha_ro(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            if loaded:
                raise
            await client.script_load(script.script)
        except ResponseError as error:
            if "unknown command" not in str(error).lower():
                raise
            _WITHOUT_READ_ONLY.add(id(client))
            return await script(keys=list(keys), args=list(args), client=client)
    raise AssertionError("unreachable")  # pragma: no cover

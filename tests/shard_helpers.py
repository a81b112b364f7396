"""A shadow spread over shards, opened and emptied for one test (every shard's keys)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shadows import Shadow
from shadows.core.keys import Keys


@asynccontextmanager
async def open_sharded(url: str, name: str, shards: int) -> AsyncIterator[Shadow]:
    async with Shadow(name=name, url=url, shards=shards) as opened:
        yield opened
        client = opened.client
        for shard in range(shards):
            prefix = Keys(name, shard).prefix
            found = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            if found:
                await client.delete(*found)

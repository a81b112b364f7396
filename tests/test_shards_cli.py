"""``shadows shards``, ``shadows shards record N`` and ``shadows shards forget N`` (issue 14)
against a real Redis: the recorded counts, each shard's work, and forgetting an old count
only once nothing needs it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from shadows import Shadow
from shadows.core.execution import now_ms
from shadows.core.keys import Keys, shard_of
from shadows.core.layout import read_layouts
from shard_helpers import open_sharded
from test_cli import shadows_cli_in_process

SHARDS = 3


async def plain(n: int) -> None: ...


@pytest.fixture
async def sharded(redis_url: str, shadow_name: str) -> AsyncIterator[Shadow]:
    async with open_sharded(redis_url, shadow_name, SHARDS) as opened:
        yield opened


def cli(shadow: Shadow, *args: str) -> tuple[int, str, str]:
    done = shadows_cli_in_process(*args, "--url", shadow.url, "--shadows", shadow.name)
    return done.returncode, done.stdout, done.stderr


async def test_shards_shows_counts_and_work_and_forgets_an_old_count_once_empty(
    sharded: Shadow,
) -> None:
    keys = [f"task-{i}" for i in range(12)]
    for key in keys:
        await sharded.add(plain, key=key)(1)
    later = datetime.now(UTC) + timedelta(hours=1)
    await sharded.add(plain, when=later, key="later")(2)
    status, out, _ = cli(sharded, "shards", "--json")
    assert status == 0
    document = json.loads(out)
    assert document["shadow"] == sharded.name and list(document["counts"]) == ["3"]
    rows = document["shards"]
    assert [row["shard"] for row in rows] == [0, 1, 2]
    assert [row["prefix"] for row in rows] == [Keys(sharded.name, s).prefix for s in range(3)]
    for row in rows:
        assert row["stream"] == len([k for k in keys if shard_of(k, SHARDS) == row["shard"]])
        assert row["pending"] == 0 and row["failed"] == 0
    assert sum(row["scheduled"] for row in rows) == 1
    status, out, _ = cli(sharded, "shards")
    assert status == 0 and "Shard counts recorded" in out and "3 (announced" in out
    assert Keys(sharded.name, 2).prefix in out
    # A CLI with the default count (1) still sees every shard the layout records.
    status, out, _ = cli(sharded, "snapshot", "--json")
    assert status == 0 and json.loads(out)["total_tasks"] == 13

    # Shrinking to one shard: record 1 first; 3 cannot be forgotten while announced...
    status, out, _ = cli(sharded, "shards", "record", "1")
    assert status == 0 and "counts in use: 1, 3" in out
    await sharded.client.hset(sharded.keys.layout, "3", now_ms())  # a process with 3 runs
    status, _, err = cli(sharded, "shards", "forget", "3")
    assert status == 1 and "announced 3 shard(s)" in err
    # ... nor, once quiet, while shards 1 and 2 (read only under 3) hold work.
    await sharded.client.hset(sharded.keys.layout, "3", 0)
    status, _, err = cli(sharded, "shards", "forget", "3")
    assert status == 1 and "still hold work" in err and "shard 1" in err
    assert sorted(await read_layouts(sharded.client, sharded.keys)) == [1, 3]
    await sharded.clear()
    status, out, _ = cli(sharded, "shards", "forget", "3")
    assert status == 0, out
    assert list(await read_layouts(sharded.client, sharded.keys)) == [1]
    status, _, err = cli(sharded, "shards", "forget", "1")
    assert status == 1 and "only recorded shard count" in err
    status, _, err = cli(sharded, "shards", "forget", "7")
    assert status == 1 and "not a recorded shard count" in err

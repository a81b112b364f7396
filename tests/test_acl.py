"""The Redis users docs/least-privilege.md documents, each tested with exactly its ACL
against a real server: every kind of work its role does succeeds, the server logs no
refusal, and what the role must not do is refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoPermissionError, ResponseError

from acl_roles import NAME, ok, prepare, prepare_reader, producer, reader, worker
from redis_server import RedisProcess
from shadows import ConcurrencyLimit, Perpetual, Shadow, Worker
from test_shards_worker import add_on, key_in

ROLES = ("producer", "worker", "reader")


def documented(repo_root: Path) -> dict[str, str]:
    """The ``ACL SETUSER`` line of each role, as an ACL file line."""
    lines = (repo_root / "docs" / "least-privilege.md").read_text().splitlines()
    found = {}
    for role in ROLES:
        [line] = [x for x in lines if x.startswith(f"ACL SETUSER {NAME}-{role} ")]
        found[role] = line.replace("ACL SETUSER ", "user ", 1)
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    acl = tmp_path_factory.mktemp("acl") / "users.acl"
    users = "\n".join(documented(Path(__file__).parent.parent).values())
    acl.write_text(f"user default off\nuser admin on >admin-pw ~* &* +@all\n{users}\n")
    with RedisProcess(extra_args=["--aclfile", str(acl)]) as process:
        yield process


def url(server: RedisProcess, user: str) -> str:
    password = "admin-pw" if user == "admin" else "CHANGE-ME"
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def admin(server: RedisProcess) -> redis.Redis:
    return redis.Redis(port=server.port, username="admin", password="admin-pw")


@pytest.fixture
def clean(server: RedisProcess) -> Iterator[None]:
    client = admin(server)
    client.flushall()
    client.acl_log_reset()
    try:
        yield
        refusals = [
            (entry["username"], entry["reason"], entry["object"])
            for entry in client.acl_log()
            if entry["username"] != "admin"
        ]
        assert refusals == [], "the documented ACL lacks what shadows used"
    finally:
        client.close()


async def test_the_producer_user_can_do_what_producers_do(
    server: RedisProcess, clean: None
) -> None:
    await producer(url(server, f"{NAME}-producer"))


async def test_the_worker_user_runs_every_kind_of_task(server: RedisProcess, clean: None) -> None:
    await producer(url(server, "admin"))
    await prepare(url(server, "admin"))
    await worker(url(server, f"{NAME}-worker"))


async def test_the_reader_user_runs_the_read_only_commands(
    server: RedisProcess, clean: None
) -> None:
    await prepare_reader(url(server, "admin"))
    await reader(url(server, f"{NAME}-reader"))


async def test_what_each_user_must_not_do(server: RedisProcess) -> None:
    async with Shadow(name=NAME, url=url(server, f"{NAME}-reader")) as shadow:
        with pytest.raises((NoPermissionError, ResponseError)):
            await shadow.add(ok)("never")
        with pytest.raises((NoPermissionError, ResponseError)):
            await shadow.clear()
    async with Shadow(name=NAME, url=url(server, f"{NAME}-producer")) as shadow:
        shadow.register(ok)
        with pytest.raises((NoPermissionError, ResponseError)):
            async with Worker(shadow) as running:
                await running.run_until_finished()
    async with Shadow(name="billing", url=url(server, f"{NAME}-worker")) as other:
        with pytest.raises((NoPermissionError, ResponseError), match="permissions"):
            await other.add(ok)("another shadow's keys")
    admin(server).acl_log_reset()


async def test_the_worker_user_runs_the_operator_commands(
    server: RedisProcess, clean: None
) -> None:
    """strike, restore, clear and the dead letters' retry and purge: the worker's rights."""
    await producer(url(server, "admin"))
    await prepare(url(server, "admin"))
    await worker(url(server, "admin"))
    async with Shadow(name=NAME, url=url(server, f"{NAME}-worker")) as shadow:
        assert await shadow.strike(ok, "label", "==", "x")
        assert await shadow.restore(ok, "label", "==", "x")
        assert await shadow.retry_failed("broken") == "queued"
        assert await shadow.clear() >= 1
        assert await shadow.purge_failed() >= 0


@pytest.fixture(scope="module")
def sharded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """The documented users with the shard keys and channels docs/least-privilege.md adds
    for a shadow spread over several shards."""
    acl = tmp_path_factory.mktemp("acl-sharded") / "users.acl"
    users = "\n".join(
        line.replace(" ~{orders}:*", " ~{orders}:* ~{orders|*}:shard:*")
        .replace("%R~{orders}:*", "%R~{orders}:* %R~{orders|*}:shard:*")
        .replace("&{orders}:*", "&{orders}:* &{orders|*}:shard:*")
        for line in documented(Path(__file__).parent.parent).values()
    )
    acl.write_text(f"user default off\nuser admin on >admin-pw ~* &* +@all\n{users}\n")
    with RedisProcess(extra_args=["--aclfile", str(acl)]) as process:
        yield process


async def test_the_worker_user_serves_every_shard(sharded_server: RedisProcess) -> None:
    """A worker of one shard count reading a shadow spread over 3 (the layout record):
    plain tasks on every shard, a concurrency-limited task left on shard 1 moved home, a
    perpetual chain in shard 2 moved to its shard under the worker's count."""
    ran: list[str] = []

    async def note(label: str) -> None:
        ran.append(label)

    async def limited(
        customer: str, limit: ConcurrencyLimit = ConcurrencyLimit("customer", max_concurrent=1)
    ) -> None:
        ran.append(f"limited {customer}")

    async def plain(customer: str) -> None:
        raise AssertionError("not run")

    async def ticking(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=10))) -> None:
        ran.append("tick")

    plain.__name__ = plain.__qualname__ = "limited"
    client = admin(sharded_server)
    client.acl_log_reset()
    try:
        async with Shadow(name=NAME, url=url(sharded_server, "admin"), shards=3) as old:
            for function in (note, plain, ticking):
                old.register(function)
            for shard in range(3):
                await add_on(old, shard, note, f"s{shard}", key=key_in(shard, "n"))
            await add_on(old, 1, plain, "c1")
            chain = await add_on(old, 2, ticking)
        worker_url = url(sharded_server, f"{NAME}-worker")
        async with Shadow(name=NAME, url=worker_url, shards=1) as shadow:
            for function in (note, limited, ticking):
                shadow.register(function)
            async with Worker(shadow, name="w1") as running:
                await running.run_at_most({chain: 3})
        assert sorted(ran) == ["limited c1", "s0", "s1", "s2", "tick", "tick", "tick"]
        refusals = [entry for entry in client.acl_log() if entry["username"] != "admin"]
        assert refusals == [], "the documented ACL lacks what a sharded worker used"
    finally:
        client.flushall()
        client.close()

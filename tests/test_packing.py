"""Commands packed by hiredis are the bytes redis-py itself would send, and sent without
a timer when the socket takes them at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from shadows.core.connection import _fast_packing, create_pool

Fast = _fast_packing(Connection)

arguments = st.lists(
    st.one_of(st.text(), st.binary(), st.integers(min_value=-(2**62), max_value=2**62)),
    max_size=30,
)


@given(name=st.sampled_from(["EVALSHA", "XADD", "HSET"]), args=arguments)
def test_hiredis_packs_what_redis_py_packs(name: str, args: list[str | bytes | int]) -> None:
    fast, plain = Fast(), Connection()
    assert b"".join(fast.pack_command(name, *args)) == b"".join(plain.pack_command(name, *args))


def test_other_commands_fall_back_to_redis_py() -> None:
    fast, plain = Fast(), Connection()
    for command in (("CLIENT ID",), ("SET", "k", 1.5), ("XINFO CONSUMERS", "s", "g")):
        assert b"".join(fast.pack_command(*command)) == b"".join(plain.pack_command(*command))


def test_pools_we_create_pack_with_hiredis() -> None:
    assert issubclass(create_pool("redis://localhost:6379/0").connection_class, Connection)
    assert create_pool("redis://localhost:6379/0").connection_class.__mro__[1].__name__ == (
        "_HiredisPacking"
    )


async def test_a_send_the_socket_takes_at_once_needs_no_timer(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual short command goes to the kernel whole: no asyncio.wait_for, whose task
    and timer per command cost about a tenth of the CPU of a short command."""
    timed: list[object] = []
    real_wait_for = asyncio.wait_for

    async def counting(awaitable: Any, timeout: float | None) -> Any:
        timed.append(awaitable)
        return await real_wait_for(awaitable, timeout)

    client = Redis(connection_pool=create_pool(redis_url))
    try:
        await client.ping()
        monkeypatch.setattr(asyncio, "wait_for", counting)
        assert await client.set("shadows-packing-small", "x")
        assert await client.get("shadows-packing-small") == b"x"
        assert timed == []
        # A write the socket cannot take at once waits for it to drain, under the
        # socket timeout, and still arrives whole.
        large = b"y" * (32 * 1024 * 1024)
        assert await client.set("shadows-packing-large", large)
        assert timed, "a send larger than the socket's buffers waits under the timeout"
        assert await client.strlen("shadows-packing-large") == len(large)
    finally:
        await client.delete("shadows-packing-small", "shadows-packing-large")
        await client.aclose()


async def test_a_send_to_a_closed_connection_is_a_connection_error(redis_url: str) -> None:
    """A server that went away surfaces as redis-py's ConnectionError (the worker's
    outage handling keys on it), and the client reconnects for the next command."""
    client = Redis(connection_pool=create_pool(redis_url))
    try:
        connection = await client.connection_pool.get_connection()
        await connection.send_command("PING")
        assert await connection.read_response() in (b"PONG", "PONG", True)
        # the server drops the connection
        own_id = await client.execute_command("CLIENT ID")
        await connection.send_command("CLIENT", "ID")
        the_id = await connection.read_response()
        assert the_id != own_id
        await client.client_kill_filter(_id=the_id)

        async def ping_until_it_fails() -> None:
            for _ in range(100):  # the kernel may take a write or two before the reset
                await connection.send_command("PING")
                await connection.read_response()

        with pytest.raises(RedisConnectionError):
            await ping_until_it_fails()
        await client.connection_pool.release(connection)
        assert await client.ping()
    finally:
        await client.aclose()


async def test_new_connections_do_not_read_package_metadata(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py 8 reads its own package metadata for every connection it makes (1.3 ms
    of CPU each); shadows' connections share one description of the client, made by the
    first of them."""
    from importlib import metadata

    reads: list[str] = []
    real_version = metadata.version

    def counting(name: str) -> str:
        reads.append(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", counting)
    pool = create_pool(redis_url)
    client = Redis(connection_pool=pool)
    try:
        connections = [await pool.get_connection() for _ in range(5)]
        for connection in connections:
            await connection.send_command("PING")
            assert await connection.read_response() in (b"PONG", "PONG", True)
            await pool.release(connection)
    finally:
        await client.aclose()
    assert len(reads) <= 1  # once in the process at most (the first connection), not five

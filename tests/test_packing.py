"""Commands packed by hiredis are the bytes redis-py itself would send."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

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

"""Scripts carry only the Lua helpers they use: Redis runs a script's whole text at
every call, so each helper defined in it is made again each time."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest
from redis.asyncio import Redis

from shadows.core import scripts
from shadows.core.scripts import linked
from shadows.operations.clearing import CLEAR_READY
from shadows.worker.homing import LEAVE, MOVE_HOME
from shadows.worker.unknown import HAND_BACK

HELPERS = """-- a table only unused() names
local WORDS = {'a',
               'b'}

-- named by used() only
local function unused()
  return WORDS[1]
end

-- named by the body
local function used(x)
  if x then
    return helper(x)
  end
  return 0
end

-- named by used()
local function helper(x)
  return x + 1
end

-- mentions unused() and dropped() in a comment only
local function dropped()
  return 2
end
"""


def defined(script: str) -> list[str]:
    found = re.findall(r"^local function (\w+)|^local (\w+) = \{", script, re.MULTILINE)
    return [function or table for function, table in found]


def test_helpers_no_code_names_are_left_out() -> None:
    script = linked(HELPERS + "-- the body: unused() is not called\nreturn used(1)\n")
    assert defined(script) == ["used", "helper"]
    assert script.endswith("return used(1)\n")


def test_a_helper_named_by_a_kept_one_is_kept() -> None:
    script = linked(HELPERS + "return unused()\n")
    assert defined(script) == ["WORDS", "unused"]


def test_scripts_carry_only_their_own_helpers() -> None:
    assert "held_by" not in defined(scripts.SCHEDULE)
    assert "take" not in defined(scripts.SCHEDULE)
    assert "place" not in defined(scripts.START)
    assert defined(LEAVE) == defined(CLEAR_READY) == ["pending_owner"]
    assert "schedule_one" in defined(scripts.COMPLETE)


ALL = {
    name: getattr(scripts, name)
    for name in dir(scripts)
    if name.isupper() and not name.startswith("_") and isinstance(getattr(scripts, name), str)
} | {"MOVE_HOME": MOVE_HOME, "LEAVE": LEAVE, "HAND_BACK": HAND_BACK, "CLEAR_READY": CLEAR_READY}


@pytest.mark.parametrize("name", sorted(ALL))
async def test_every_linked_script_compiles_and_names_only_what_it_defines(
    name: str, redis_url: str
) -> None:
    script = ALL[name]
    client = Redis.from_url(redis_url)
    try:
        assert await client.script_load(script)
    finally:
        await client.aclose()
    helpers = set(defined(scripts._PRELUDE + scripts._SCHEDULE_ONE + _DELIVERIES))
    code = re.sub(r"--[^\n]*", "", script)
    for helper in helpers:
        if re.search(rf"\b{helper}\(", code):
            assert helper in defined(script), f"{name} calls {helper}() without defining it"


_DELIVERIES = (files("shadows.core.scripts") / "deliveries.lua").read_text()


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (["5-9", "5-10"], ["5-9", "5-10"]),
        (["5-10", "5-9", "5-100"], ["5-9", "5-100"]),
        (["99-0", "100-0", "1000-5", "1000-0"], ["99-0", "1000-5"]),
        (["1796311401096-0"], ["1796311401096-0", "1796311401096-0"]),
        (
            ["1796311401096-3", "1796311401095-7", "1796311401096-12"],
            ["1796311401095-7", "1796311401096-12"],
        ),
    ],
)
async def test_id_range_compares_stream_ids_as_numbers(
    ids: list[str], expected: list[str], redis_url: str
) -> None:
    script = linked(scripts._PRELUDE + "return {id_range(ARGV)}\n")
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await client.eval(script, 0, *ids) == expected
    finally:
        await client.aclose()

"""The Lua scripts that change a shadow's state atomically.

Each script runs inside Redis as one atomic step, so two workers never move the same task
twice, a crash between two writes cannot happen halfway, and a retried call (after a lost
reply) is harmless: every script is idempotent.

The data model these scripts maintain is described in ``docs/architecture.md``.

Each script is a ``.lua`` file of this package (shipped in the wheel with it), read once
at import. A script that uses shared helpers is their files followed by its own: the
helpers are ``prelude.lua`` (fields, placing a task), ``schedule_one.lua`` (the steps of
SCHEDULE) and ``deliveries.lua`` (counting deliveries, see :mod:`shadows.core.deliveries`).
:class:`Scripts` registers them all on a client, typed, for the call sites.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def _lua(*names: str) -> str:
    """The text of the ``.lua`` files ``names`` of this package, in order, without the
    helpers it does not use (see :func:`linked`)."""
    return linked("".join(map(_text, names)))


@functools.cache
def _text(name: str) -> str:
    return (files(__package__) / f"{name}.lua").read_text()


#: A top-level helper of a script, with the comment lines above it: a function (up to the
#: first ``end`` at the start of a line) or a table constant.
_HELPER = re.compile(
    r"^(?:--[^\n]*\n)*"
    r"(?:local function (\w+)\((?:[^\n]*\n)*?end\n|local (\w+) = \{[^}]*\}\n)",
    re.MULTILINE,
)


_COMMENT = re.compile(r"--[^\n]*")


def linked(script: str) -> str:
    """``script`` without the top-level helpers nothing in it names. Redis runs a script's
    whole text at every call, so every helper it defines (a closure, a table) is made
    again each time: a script that places one task need not make the ones that count
    deliveries."""
    helpers = {(found.group(1) or found.group(2)): found for found in _HELPER.finditer(script)}
    rest, start = [], 0
    for found in helpers.values():
        rest.append(script[start : found.start()])
        start = found.end()
    rest.append(script[start:])
    # what the script's own text names, then what those helpers name, and so on
    wanted = _names(" ".join(rest)) & helpers.keys()
    named = set(wanted)
    while wanted:
        found = helpers[wanted.pop()]
        more = (_names(found.group(0)) & helpers.keys()) - named
        named |= more
        wanted |= more
    for name, found in reversed(helpers.items()):
        if name not in named:
            script = script[: found.start()] + script[found.end() :]
    return re.sub(r"\n{3,}", "\n\n", script)


def _names(lua: str) -> set[str]:
    """The words of ``lua`` outside its comments."""
    return set(_WORD.findall(_COMMENT.sub("", lua)))


_WORD = re.compile(r"\w+")


#: The helpers, whole: a script made of them and its own text goes through :func:`linked`.
_PRELUDE = _text("prelude")
_SCHEDULE_ONE = _text("schedule_one")
SCHEDULE = _lua("prelude", "schedule_one", "schedule")
SCHEDULE_MANY = _lua("prelude", "schedule_one", "schedule_many")
MOVE_DUE = _lua("prelude", "move_due")
START = _lua("prelude", "deliveries", "start")
COMPLETE = _lua("prelude", "schedule_one", "complete")
ABANDON = _lua("abandon")
DROP_DEAD = _lua("drop_dead")
ACQUIRE = _lua("prelude", "deliveries", "acquire")
RENEW = _lua("renew")
RELEASE = _lua("prelude", "deliveries", "release")
STRIKE = _lua("strike")
STRIKES_SNAPSHOT = _lua("strikes_snapshot")
PENDING_WORK = _lua("pending_work")


class Scripts:
    """The scripts above, registered on one client (EVALSHA, reloaded after NOSCRIPT)."""

    def __init__(self, client: Redis) -> None:
        self.schedule = client.register_script(SCHEDULE)
        self.schedule_many = client.register_script(SCHEDULE_MANY)
        self.move_due = client.register_script(MOVE_DUE)
        self.start = client.register_script(START)
        self.complete = client.register_script(COMPLETE)
        self.acquire = client.register_script(ACQUIRE)
        self.pending_work = client.register_script(PENDING_WORK)
        self.renew = client.register_script(RENEW)
        self.release = client.register_script(RELEASE)
        self.drop_dead = client.register_script(DROP_DEAD)
        self.abandon = client.register_script(ABANDON)
        self.strike = client.register_script(STRIKE)
        self.strikes_snapshot = client.register_script(STRIKES_SNAPSHOT)


def outcome_pairs(flat: Sequence[Any]) -> list[Any]:
    """``[[state, detail], ...]`` from SCHEDULE_MANY's flat reply."""
    return [list(flat[i : i + 2]) for i in range(0, len(flat), 2)]


async def call(script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run ``script`` (a small wrapper that keeps the call sites typed)."""
    return await script(keys=list(keys), args=list(args))

"""Removing all scheduled and not yet started work of a shadow (``Shadow.clear``).

Page by page, in two steps each: the task keys are read first, then a script removes
those still scheduled (or not yet delivered) with every key it touches declared, which a
cluster requires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shadows.core.keys import WORKER_GROUP, Keys
from shadows.core.layout import every_shard
from shadows.core.scripts import _PRELUDE, linked

if TYPE_CHECKING:
    from shadows.core.backend import Backend

#: Tasks looked at per script call.
PAGE = 500


# KEYS: queue, then the parked, run and successor keys of each task key in ARGV
# ARGV: task keys read from the queue
# Removes those still scheduled; returns how many.
CLEAR_QUEUED = r"""
local removed = 0
for i = 1, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('DEL', KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1])
    removed = removed + 1
  end
end
return removed
"""

# KEYS: stream, then the run and successor keys of each entry
# ARGV: group, then per entry: its id and its task key ('' for none), read beforehand
# Removes the entries no worker has received yet; returns how many.
CLEAR_READY = linked(
    _PRELUDE
    + r"""
local stream, group = KEYS[1], ARGV[1]
local removed = 0
for i = 1, (#ARGV - 1) / 2 do
  local id, key = ARGV[2 * i], ARGV[2 * i + 1]
  if not pending_owner(stream, group, id) and redis.call('XDEL', stream, id) == 1 then
    if key ~= '' then redis.call('DEL', KEYS[2 * i], KEYS[2 * i + 1]) end
    removed = removed + 1
  end
end
return removed
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def clear(shadow: Backend) -> int:
    """Remove all scheduled and queued (not yet started) work of every shard; returns how
    many."""
    total = 0
    for keys in await every_shard(shadow):
        total += await _clear_shard(shadow, keys)
    return total


async def _clear_shard(shadow: Backend, keys: Keys) -> int:
    total = 0
    while (removed := await _clear_queued(shadow, keys)) is not None:
        total += removed
    start = "-"
    while True:
        entries = await shadow.client.xrange(keys.stream, start, "+", count=PAGE)
        if not entries:
            return total
        total += await _clear_ready(shadow, keys, entries)
        start = f"({_text(entries[-1][0])}"


async def _clear_queued(shadow: Backend, keys: Keys) -> int | None:
    """How many of the first page of the queue were removed; None once it is empty."""
    page = [_text(key) for key in await shadow.client.zrange(keys.queue, 0, PAGE - 1)]
    if not page:
        return None
    script_keys = [keys.queue]
    for key in page:
        script_keys += [keys.parked(key), keys.run(key), keys.successor(key)]
    return int(await shadow.client.register_script(CLEAR_QUEUED)(keys=script_keys, args=page))


async def _clear_ready(shadow: Backend, keys: Keys, entries: list[Any]) -> int:
    script_keys = [keys.stream]
    args: list[str] = [WORKER_GROUP]
    for entry_id, fields in entries:
        key = _text(fields.get(b"key", fields.get("key", b"")))
        script_keys += [keys.run(key), keys.successor(key)]
        args += [_text(entry_id), key]
    return int(await shadow.client.register_script(CLEAR_READY)(keys=script_keys, args=args))

"""Where each shard's hash tag puts it in the cluster's slot space (issue 14).

Redis Cluster serves slot ``CRC16(tag) % 16384`` on whichever master owns it, and the
tools that build clusters (``redis-cli --cluster create``, managed services) give each
master a contiguous, roughly equal range. So shards whose slots sit at even distances
from each other land on different masters, without asking the cluster anything.

Shard 0 keeps the tag ``name`` (slot ``s0``). Shard ``i > 0`` takes ``name|i~k`` with the
smallest ``k`` whose slot lies near ``s0 + offset(i) * 16384`` and in the matching cell
of the slot space cut into 48 equal ranges (cut as ``redis-cli`` cuts it among masters),
so that no shard lands across a boundary that shard 0 does not. The offsets do not depend
on the shard count, so shard ``i`` has the same keys under every count and a live change
of ``N`` moves no shard (see docs/scaling.md): 1/3, 2/3, then the odd sixths, the odd
twelfths... interleaved over the thirds, so the first ``3 * 2**k`` shards are evenly
spaced (3 shards on 3 masters, 6 two per master).
"""

from __future__ import annotations

from functools import lru_cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

SLOTS = REDIS_CLUSTER_HASH_SLOTS

#: How far (slots, either way) a shard's slot may lie from its target: about 2 * WINDOW
#: slots qualify, so finding one takes about 16384 / (2 * WINDOW) CRC16s, once per shard.
WINDOW = 48

#: Shards below 48 are placed in a cell of the slot space cut into 48 ranges (which nests
#: every cut into 3 * 2**k ranges up to 48), so that they spread over 3, 6, 12, 24 or 48
#: masters alike; shards beyond, in a cell of their own denominator.
FINEST = 48

#: Searches give up on the target (keeping only the cell) after this many tries: never
#: reached in practice (each try succeeds with probability >= WINDOW / 16384).
MAX_TRIES = 1 << 16


def offset(shard: int) -> tuple[int, int]:
    """Shard ``shard``'s distance from shard 0 as a fraction of the slot space:
    ``(numerator, denominator)``, the denominator ``3 * 2**k``."""
    if shard <= 0:
        return 0, 1
    if shard <= 2:
        return shard, 3
    level, first = 1, 3  # level k adds 3 * 2**(k-1) shards: the odd multiples of 1/(3*2**k)
    while shard >= first + 3 * 2 ** (level - 1):
        first += 3 * 2 ** (level - 1)
        level += 1
    rank, third = divmod(shard - first, 3)
    step = _reversed(rank, level - 1)  # spread each level's picks within every third
    return third * 2**level + 2 * step + 1, 3 * 2**level


def _reversed(value: int, bits: int) -> int:
    out = 0
    for _ in range(bits):
        out, value = (out << 1) | (value & 1), value >> 1
    return out


def cell_start(cell: int, cells: int) -> int:
    """The first slot of ``cell`` when the slot space is cut into ``cells`` ranges, as
    ``redis-cli --cluster create`` cuts it among masters (rounded to the nearest slot)."""
    return (2 * cell * SLOTS + cells) // (2 * cells)


def cell_of(slot: int, cells: int) -> int:
    """The range holding ``slot`` when the slot space is cut into ``cells`` ranges."""
    cell = slot * cells // SLOTS
    while cell + 1 < cells and cell_start(cell + 1, cells) <= slot:
        cell += 1
    while cell > 0 and cell_start(cell, cells) > slot:
        cell -= 1
    return cell


def slot_of(tag: str) -> int:
    """The cluster slot of the hash tag ``tag``."""
    return key_slot(tag.encode())


@lru_cache(maxsize=4096)
def shard_tag(name: str, shard: int) -> str:
    """The hash tag (without braces) of shard ``shard`` of the shadow ``name``."""
    if shard == 0:
        return name
    home = slot_of(name)
    numerator, denominator = offset(shard)
    target = (home + (2 * numerator * SLOTS + denominator) // (2 * denominator)) % SLOTS
    cells = max(FINEST, denominator)
    cell = (cell_of(home, cells) + numerator * cells // denominator) % cells
    for tries in range(2 * MAX_TRIES):
        tag = f"{name}|{shard}~{tries}"
        slot = slot_of(tag)
        if cell_of(slot, cells) != cell:
            continue
        near = min((slot - target) % SLOTS, (target - slot) % SLOTS) <= WINDOW
        if near or tries >= MAX_TRIES:
            return tag
    raise AssertionError("unreachable: a cell holds at least 1/3072 of the slots")

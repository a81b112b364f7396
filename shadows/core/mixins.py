"""Connection classes with one of shadows' behaviours mixed in front (hiredis packing,
following failovers, asking the sentinels). Each pair is made once: redis-py pools make
their connections from the class, and a pool's class is compared by identity."""

from __future__ import annotations

from typing import Any

_made: dict[tuple[type[Any], type[Any]], type[Any]] = {}


def mixed(mixin: type[Any], base: type[Any]) -> type[Any]:
    """``base`` with ``mixin`` in front of it, under ``base``'s name."""
    made = _made.get((mixin, base))
    if made is None:
        made = _made[mixin, base] = type(base.__name__, (mixin, base), {})
    return made

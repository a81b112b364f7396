"""The producer's side of strikes: writing and lifting them (see
:mod:`shadows.operations.strikes` for the model and the matching)."""

from __future__ import annotations

import logging

from shadows.core.backend import Backend
from shadows.operations.strikes import FEED_LENGTH, Strike, read_strikes

logger = logging.getLogger("shadows.shadow")


async def strike(shadow: Backend, struck: Strike) -> bool:
    """Put ``struck`` in effect; ``False`` when it already was."""
    changed = await _change(shadow, "strike", [struck.encode(shadow.payloads)])
    if changed:
        logger.info("Struck %s on shadow %s", struck, shadow.name)
    return changed


async def restore(shadow: Backend, lifted: Strike) -> bool:
    """Lift ``lifted`` and every strike it names; ``False`` when none was in effect."""
    fields = {lifted.encode(shadow.payloads)}
    current, broken = await read_strikes(shadow.client, shadow.keys, shadow.payloads)
    fields.update(f for f, existing in current.items() if existing.named_by(lifted))
    fields.update(f for f, unreadable in broken.items() if unreadable.describes(lifted))
    changed = await _change(shadow, "restore", sorted(fields))
    if changed:
        logger.info("Restored %s on shadow %s", lifted, shadow.name)
    return changed


async def in_effect(shadow: Backend) -> list[Strike]:
    """The strikes in effect, oldest first (unreadable ones logged and left out)."""
    current, broken = await read_strikes(shadow.client, shadow.keys, shadow.payloads)
    for unreadable in broken.values():
        logger.warning("Cannot read the strike %s: %s", unreadable, unreadable.reason)
    return list(current.values())


async def _change(shadow: Backend, action: str, fields: list[str]) -> bool:
    keys = shadow.keys
    changed = await shadow.scripts.strike(
        keys=[keys.strikes_in_effect, keys.strikes], args=[action, FEED_LENGTH, *fields]
    )
    return bool(int(changed))

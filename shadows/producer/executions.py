"""The producer's side of execution state: reading one execution, and cancelling it
(also while it runs: see :mod:`shadows.core.state_scripts` and
:mod:`shadows.worker.revocations`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shadows.core.execution import Execution
from shadows.core.keys import WORKER_GROUP
from shadows.core.layout import on_shard
from shadows.core.link import Link
from shadows.core.message import now_ms
from shadows.core.state import Source, read_record
from shadows.operations.strikes import FEED_LENGTH
from shadows.producer import sharding
from shadows.producer.registration import UnknownTaskError


class Owner(Source, Protocol):
    """What these functions need of a shadow (no import of it: no cycle)."""

    execution_ttl: timedelta

    @property
    def url(self) -> str: ...

    @property
    def shards(self) -> int: ...

    @property
    def tasks(self) -> Mapping[str, Callable[..., Any]]: ...

    def link(self) -> Link: ...


#: What :func:`cancel` did: nothing to cancel, removed a waiting task, revoked a held one.
NOTHING, REMOVED, REVOKED = 0, 1, 2
#: The script's answer for a revocation outside the home shard: announce it on the feed.
ANNOUNCE = 3


async def cancel(shadow: Owner, key: str, holder: str = "") -> int:
    """The CANCEL script for ``key`` (``holder``: the run cancelling its own successor):
    :data:`NOTHING`, :data:`REMOVED` or :data:`REVOKED`."""
    shard = await sharding.locate(shadow, key)
    keys = shadow.keys.of_shard(shard)
    ttl = int(shadow.execution_ttl.total_seconds())
    names = [keys.queue, keys.run(key), keys.parked(key), keys.successor(key), keys.stream]
    if shard == 0:
        names.append(keys.strikes)  # the feed shares the home shard's slot: one step
    args: list[str | int] = [key, holder, WORKER_GROUP, now_ms(), ttl, FEED_LENGTH]
    args.append(keys.events(key))
    done = int(await shadow.link().state.cancel(keys=names, args=args))
    if done == ANNOUNCE:
        # Another shard's slot: the revocation mark is written (START, ACQUIRE and
        # COMPLETE honour it); the feed entry only wakes the worker running the task.
        fields: dict[Any, Any] = {"action": "revoke", "key": key}
        await shadow.client.xadd(keys.strikes, fields, maxlen=FEED_LENGTH, approximate=True)
        return REVOKED
    return done


async def get_execution(shadow: Owner, key: str) -> Execution | None:
    """The execution ``key`` as its run record says, or ``None``."""
    source = on_shard(shadow, await sharding.locate(shadow, key))
    record = await read_record(source, key)
    if record is None:
        return None
    function = shadow.tasks.get(record.function) or _stand_in(record.function)
    when = record.when or datetime.now(UTC)
    return Execution(function, (), {}, when, key, record.attempt).bind(source, record)


def _stand_in(name: str) -> Callable[..., Any]:
    """A function named ``name`` for an execution of a task not registered here."""

    def unregistered(*args: Any, **kwargs: Any) -> Any:
        raise UnknownTaskError(f"Task {name!r} is not registered on this shadow")

    unregistered.__name__ = unregistered.__qualname__ = name
    return unregistered

"""What the layers under the producer use of a shadow, as a :class:`Protocol`.

Operations (strikes, snapshots, the registry, dead letters, metrics) and the worker's
loops need a shadow's name, key layout, client, scripts and payload codec, not the whole
:class:`~shadows.Shadow` (which is defined above them and imports them). They are typed
against :class:`Backend`, which ``Shadow`` satisfies, so the imports only go downwards.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from shadows.core.keys import Keys
    from shadows.core.scripts import Scripts
    from shadows.core.serialization import Payloads


class Backend(Protocol):
    """A shadow as its Redis layer: name, URL, keys, client, scripts, payloads and TTLs."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def keys(self) -> Keys: ...

    @property
    def shards(self) -> int:
        """How many shards this process spreads new work over (see :mod:`routing`)."""
        ...

    @property
    def client(self) -> Redis | RedisCluster:
        """One server's client, or a cluster's: they differ in connections (no single
        pool, no ``client()`` on a cluster), which the type checker then points out."""
        ...

    @property
    def scripts(self) -> Scripts: ...

    @property
    def payloads(self) -> Payloads: ...

    @property
    def execution_ttl(self) -> timedelta: ...

    @property
    def dead_letter_ttl(self) -> timedelta: ...

    @property
    def dead_letter_limit(self) -> int: ...

    @property
    def heartbeat_interval(self) -> timedelta: ...

    @property
    def missed_heartbeats(self) -> int: ...

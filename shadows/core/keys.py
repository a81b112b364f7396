"""The Redis key layout of one shadow.

Every key starts with a hash tag so that the keys one Lua script touches live in one Redis
Cluster slot. A shadow spread over ``N`` shards has ``N`` tags: shard 0, the *home* shard,
is ``{name}`` (so ``shards=1`` is the layout of an unsharded shadow) and also holds every
global key (strikes, the worker registry, concurrency pools, flow-control buckets); shard
``i > 0`` puts its own keys (stream, queue, parked messages, run records, successors, dead
letters, epoch) under ``{name|i~k}:shard:``, ``k`` chosen so that the shards' slots are
spread evenly over the cluster's masters (:mod:`shadows.core.spread`). No shadow name can
produce that prefix: a shadow named ``name|i~k`` has no key called ``shard``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from shadows.core.spread import shard_tag

_VALID_NAME = re.compile(r"^[^{}\s]{1,200}$")

#: The consumer group every worker of a shadow reads the stream through.
WORKER_GROUP = "shadows-workers"


def validate_name(name: str) -> str:
    """Reject names that would break the hash tag or the key layout."""
    if not isinstance(name, str) or not _VALID_NAME.match(name):
        raise ValueError(
            f"Invalid shadow name {name!r}: use 1-200 characters without braces or whitespace"
        )
    return name


def shard_of(key: str, shards: int) -> int:
    """The shard a task key lives in: stable across processes, machines and versions."""
    if shards <= 1:
        return 0
    return zlib.crc32(key.encode()) % shards


@dataclass(frozen=True, slots=True)
class Keys:
    """Names of the Redis keys of shard ``shard`` of the shadow ``name``, and of its global
    keys (which are the same whatever the shard)."""

    name: str
    shard: int = 0
    #: The prefix of this shard's own keys, and of the home shard, where the global keys
    #: live: worked out once (a worker names several keys per message it runs).
    prefix: str = field(init=False, repr=False, compare=False)
    home_prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        home = f"{{{self.name}}}:"
        object.__setattr__(self, "home_prefix", home)
        tag = shard_tag(self.name, self.shard) if self.shard else ""
        shard = f"{{{tag}}}:shard:" if tag else home
        object.__setattr__(self, "prefix", shard)

    def of_shard(self, shard: int) -> Keys:
        """The keys of another shard of the same shadow."""
        return self if shard == self.shard else Keys(self.name, shard)

    @property
    def home(self) -> Keys:
        """The keys of shard 0."""
        return self.of_shard(0)

    @property
    def stream(self) -> str:
        """Ready work, read by the workers' consumer group."""
        return f"{self.prefix}stream"

    @property
    def epoch(self) -> str:
        """A random token that lives as long as Redis keeps the shadow's data: a worker
        that finds it missing or changed knows the data was lost (see continuity.py)."""
        return f"{self.prefix}epoch"

    @property
    def queue(self) -> str:
        """Sorted set of future task keys scored by due time (ms since the epoch)."""
        return f"{self.prefix}queue"

    def parked(self, key: str) -> str:
        """Hash holding the message fields of a task that waits in the queue."""
        return f"{self.prefix}parked:{key}"

    def run(self, key: str) -> str:
        """Hash with the state of the task ``key`` (scheduled, queued, running, done)."""
        return f"{self.prefix}run:{key}"

    def events(self, key: str) -> str:
        """Pub/sub channel announcing changes of the run record of ``key`` (a wake-up for
        watchers: the record is the truth). Named after the record, so that a script
        holding the record's key can name it; a channel, not a key."""
        return f"{self.run(key)}:events"

    def successor(self, key: str) -> str:
        """Hash holding the message fields of the task a running ``key`` scheduled for its
        own key: placed when that run ends (the run hash's ``successor`` field holds
        whether it was an add or a replace)."""
        return f"{self.prefix}successor:{key}"

    @property
    def layout(self) -> str:
        """Hash of the shard counts in use: count -> when a producer or worker with that
        count last announced itself (ms). See :mod:`shadows.core.layout`."""
        return f"{self.home_prefix}layout"

    @property
    def strikes(self) -> str:
        """Stream of strike and restore changes: wakes the workers (trimmed; the hash below
        is the truth)."""
        return f"{self.home_prefix}strikes"

    @property
    def strikes_in_effect(self) -> str:
        """Hash of the strikes in effect: canonical strike encoding -> when struck (ms)."""
        return f"{self.home_prefix}strikes-in-effect"

    @property
    def workers(self) -> str:
        """Sorted set of worker names scored by their last heartbeat."""
        return f"{self.home_prefix}workers"

    def worker_tasks(self, worker: str) -> str:
        """Set of task names one worker can run (expires with the worker's heartbeats)."""
        return f"{self.home_prefix}worker-tasks:{worker}"

    def worker(self, worker: str) -> str:
        """Hash describing one live worker (concurrency, running, started); it expires
        when the worker misses its heartbeats."""
        return f"{self.home_prefix}worker:{worker}"

    def concurrency(self, slot: str) -> str:
        """Sorted set of the task keys holding a slot of one concurrency pool, scored by
        the expiry of their lease."""
        return f"{self.home_prefix}concurrency:{slot}"

    def waiting(self, slot: str) -> str:
        """Sorted set of task keys parked until a slot of that pool frees (by arrival)."""
        return f"{self.home_prefix}waiting:{slot}"

    def cooldown(self, bucket: str) -> str:
        """String naming the message whose start opened the cooldown of ``bucket``
        (expires with the window)."""
        return f"{self.home_prefix}cooldown:{bucket}"

    def rate(self, bucket: str) -> str:
        """Sorted set of the starts counted against the rate limit of ``bucket``, scored by
        when they started (ms, Redis's clock)."""
        return f"{self.home_prefix}rate:{bucket}"

    def rate_waiting(self, bucket: str) -> str:
        """Sorted set of the task keys a rate limit of ``bucket`` postponed, scored by the
        moment each is due back (ms, Redis's clock)."""
        return f"{self.home_prefix}rate-waiting:{bucket}"

    def debounce(self, bucket: str) -> str:
        """Hash of the open debounce burst of ``bucket``: the key of its run and when its
        first submission came (ms)."""
        return f"{self.home_prefix}debounce:{bucket}"

    @property
    def failed(self) -> str:
        """Sorted set of dead-lettered task keys scored by failure time."""
        return f"{self.prefix}failed"

    def dead(self, key: str) -> str:
        """Hash holding one dead-lettered task with its error."""
        return f"{self.prefix}dead:{key}"

"""Adding many tasks at once: collected locally, written in pipelines.

A pipeline that fails stops the send: what earlier pipelines (and the script calls of the
failed one that answered) wrote is reported with the rest in a :class:`BatchError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, Self, cast, overload

from redis.exceptions import RedisError

from shadows.behaviours.base import plan_for
from shadows.core.execution import Execution, Message
from shadows.core.functions import describe, task_name
from shadows.core.layout import on_shard
from shadows.core.reconnect import CONNECTION_ERRORS
from shadows.core.scripts import outcome_pairs
from shadows.core.urls import is_cluster
from shadows.operations.instrumentation import producing
from shadows.producer.debouncing import Tables, debounce_of
from shadows.producer.sharding import Router, route_many

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.asyncio.cluster import RedisCluster

    from shadows.core.serialization import Payloads
    from shadows.core.state import Source

P = ParamSpec("P")

#: Tasks per script call: one call costs Redis more than the writes of an add, yet a
#: call must stay short, for Redis serves no one else while a script runs.
PER_CALL = 100


class Producer(Router, Protocol):
    """What a batch uses of its shadow (:class:`~shadows.Shadow`, defined above it)."""

    @property
    def name(self) -> str: ...

    @property
    def payloads(self) -> Payloads: ...

    @property
    def debounce_tables(self) -> Tables: ...

    def caller(
        self, function: Callable[..., Any] | str, when: datetime | None, key: str | None
    ) -> Callable[..., Execution]: ...

    async def add_messages(
        self, messages: Sequence[Message], pipe: Pipeline | Redis | RedisCluster, shard: int = 0
    ) -> Any: ...

    def scheduled(self, message: Message, outcome: Any) -> str: ...


class BatchError(Exception):
    """A send of a batch that could not write everything.

    ``outcomes`` holds one entry per add of that send, in order: ``queued``, ``scheduled``
    or ``exists`` for each add Redis confirmed, ``None`` for the others, whose executions
    are ``unconfirmed`` (not written, or written without an answer; adding them again is
    safe while they are scheduled, queued or running, since keys are idempotent).
    """

    def __init__(
        self, outcomes: list[str | None], executions: list[Execution], cause: BaseException
    ) -> None:
        self.outcomes = outcomes
        self.unconfirmed = [e for e, o in zip(executions, outcomes, strict=True) if o is None]
        written = len(outcomes) - len(self.unconfirmed)
        super().__init__(
            f"{written} of {len(outcomes)} adds of the batch were written; the other "
            f"{len(self.unconfirmed)} are not confirmed ({type(cause).__name__}: {cause}): "
            "see BatchError.outcomes and .unconfirmed"
        )


class Batch:
    """The adds of one ``async with shadows.batch()`` block (see :meth:`Shadow.batch`)."""

    def __init__(self, shadow: Producer, size: int = 1000) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, not {size!r}")
        self.shadow = shadow
        self.size = size
        self._messages: list[Message] = []
        self._executions: list[Execution] = []
        #: ``queued``, ``scheduled`` or ``exists`` for each add, once the batch is sent
        #: (a send that raised :class:`BatchError` reports its own in the error).
        self.outcomes: list[str] = []

    def __len__(self) -> int:
        return len(self._messages)

    @overload
    def add(
        self, function: Callable[P, Any], when: datetime | None = None, key: str | None = None
    ) -> Callable[P, Execution]: ...

    @overload
    def add(
        self, function: str, when: datetime | None = None, key: str | None = None
    ) -> Callable[..., Execution]: ...

    def add(
        self,
        function: Callable[P, Any] | str,
        when: datetime | None = None,
        key: str | None = None,
    ) -> Callable[P, Execution] | Callable[..., Execution]:
        """Like :meth:`Shadow.add`, but the call only checks and encodes the task; it is
        written when the batch is sent."""
        call = self.shadow.caller(function, when, key)  # resolves (registers) the task
        name = function if isinstance(function, str) else task_name(function)
        if debounce_of(self.shadow, plan_for(self.shadow.tasks[name]), name):
            raise ValueError(
                f"{function if isinstance(function, str) else describe(function)} is "
                "debounced: add its calls with shadows.add(), not in a batch"
            )

        def collect(*args: Any, **kwargs: Any) -> Execution:
            execution = call(*args, **kwargs)
            with producing(self.shadow.name, execution, "add") as context:
                self._messages.append(execution.to_message(self.shadow.payloads, extra=context))
            self._executions.append(execution)
            return execution

        return collect

    async def send(self) -> list[str]:
        """Write what was added since the last send; returns their outcomes.

        Raises :class:`BatchError` if a pipeline fails; the later ones are not sent.
        """
        messages, self._messages = self._messages, []
        executions, self._executions = self._executions, []
        plans = [plan_for(execution.function) for execution in executions]
        try:
            shards = await route_many(self.shadow, [m.key for m in messages], plans)
        except (RedisError, OSError) as error:  # nothing written yet
            raise BatchError([None] * len(messages), executions, error) from error
        for execution, shard in zip(executions, shards, strict=True):
            execution.shadow = on_shard(cast("Source", self.shadow), shard)
        outcomes: list[str | None] = []
        for at in range(0, len(messages), self.size):
            chunk = messages[at : at + self.size]
            written, failure = await self._send(chunk, shards[at : at + self.size])
            outcomes += written
            if failure is not None:
                outcomes += [None] * (len(messages) - len(outcomes))
                raise BatchError(outcomes, executions, failure) from failure
        sent = cast(list[str], outcomes)  # no None without a failure
        self.outcomes += sent
        return sent

    async def _send(
        self, chunk: list[Message], shards: list[int]
    ) -> tuple[list[str | None], Exception | None]:
        """One pipeline (on a cluster, its calls one by one) of script calls, each adding
        up to :data:`PER_CALL` messages of one shard: the outcome of each message, in
        order (``None`` where not confirmed), and the first error."""
        by_shard: dict[int, list[int]] = {}
        for index, shard in enumerate(shards):
            by_shard.setdefault(shard, []).append(index)
        parts = [
            (shard, indexes[first : first + PER_CALL])
            for shard, indexes in by_shard.items()
            for first in range(0, len(indexes), PER_CALL)
        ]
        calls = [(shard, [chunk[i] for i in indexes]) for shard, indexes in parts]
        try:
            if is_cluster(self.shadow.url):
                replies = await self._one_by_one(calls)
            else:
                async with self.shadow.client.pipeline(transaction=False) as pipe:
                    for shard, part in calls:  # one server's pipeline (not a cluster's)
                        await self.shadow.add_messages(part, cast("Pipeline", pipe), shard)
                    replies = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as error:  # no answer at all (connection lost...)
            return [None] * len(chunk), error
        outcomes: list[str | None] = [None] * len(chunk)
        failure: Exception | None = None
        for (_, indexes), reply in zip(parts, replies, strict=True):
            if isinstance(reply, Exception):  # this script call failed; the others stand
                failure = failure or reply
                continue
            for index, outcome in zip(indexes, outcome_pairs(reply), strict=True):
                outcomes[index] = self.shadow.scheduled(chunk[index], outcome)
        return outcomes, failure

    async def _one_by_one(self, calls: list[tuple[int, list[Message]]]) -> list[Any]:
        """The replies of the script calls, sent one after another (redis-py refuses
        scripts in a cluster pipeline), in order: a key added twice is "exists" the second
        time. As in a pipeline, a refused call is its error and the others are sent; after
        a call with no answer, the rest is not sent and shares its error."""
        replies: list[Any] = []
        for shard, part in calls:
            try:
                replies.append(await self.shadow.add_messages(part, self.shadow.client, shard))
            except CONNECTION_ERRORS as error:
                return replies + [error] * (len(calls) - len(replies))
            except RedisError as error:
                replies.append(error)
        return replies

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.send()
        else:
            self._messages, self._executions = [], []

"""The producer side: a named, shared collection of work in Redis."""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, overload

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from shadows.behaviours.base import plan_for
from shadows.core.connection import normalize_url, redact_url
from shadows.core.execution import Execution, Message, current_holder, now_ms
from shadows.core.functions import task_name
from shadows.core.keys import WORKER_GROUP, Keys, validate_name
from shadows.core.layout import every_shard, on_shard
from shadows.core.link import Link
from shadows.core.scripts import Scripts
from shadows.core.serialization import Codec, Payloads, codec_named
from shadows.core.state import ExecutionState
from shadows.operations import clearing, dead_letters
from shadows.operations.dead_letters import DeadLetter
from shadows.operations.instrumentation import producing
from shadows.operations.metrics import task_added
from shadows.operations.registry import WorkerInfo, check_heartbeats, list_workers
from shadows.operations.snapshot import Snapshot
from shadows.operations.snapshot_pages import take_snapshot
from shadows.operations.strikes import Operator, Strike, strike_for
from shadows.producer import debouncing, executions, sharding, striking
from shadows.producer.batch import Batch
from shadows.producer.registration import TaskFunction, TaskRegistry
from shadows.producer.task import validate_when
from shadows.settings import current
from shadows.tasks import standard_tasks

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

logger = logging.getLogger("shadows.shadow")


#: The shadows whose name and URL come from the settings, i.e. the application's own.
configured_shadows: weakref.WeakSet[Shadow] = weakref.WeakSet()


#: The states an add or replace leaves a stored execution in, by the script's answer.
_PLACED = {"queued": ExecutionState.QUEUED, "scheduled": ExecutionState.SCHEDULED}


class Shadow(TaskRegistry):
    """One named queue of work shared by every producer and worker with the same URL.

    ``Shadow()`` does no I/O: it may be made at import time, and connects on first use
    (or in ``async with``), on whichever event loop is running then. ``url`` may be
    ``redis://``, ``rediss://``, ``unix://``, ``valkey://``, ``redis+sentinel://``,
    ``redis+cluster://`` or ``memory://`` (in-process), or pass ``connection_pool=``. Every
    argument left out comes from the settings (``docs/configuration.md``): among them
    ``codec`` (``"pickle"``, ``"json"``, ``"msgpack"`` or a codec object), ``signing_key``
    (``max_message_age`` then refuses older messages), ``results`` (up to
    ``result_max_bytes`` each) and ``shards`` (``docs/scaling.md``).
    """

    def __init__(
        self,
        name: str | None = None,
        url: str | None = None,
        *,
        connection_pool: ConnectionPool | None = None,
        execution_ttl: timedelta | None = None,
        codec: Codec | str | None = None,
        signing_key: str | bytes | None = None,
        dead_letter_ttl: timedelta | None = None,
        dead_letter_limit: int | None = None,
        heartbeat_interval: timedelta | None = None,
        missed_heartbeats: int | None = None,
        max_message_age: timedelta | None = None,
        results: bool | None = None,
        result_max_bytes: int | None = None,
        shards: int | None = None,
    ) -> None:
        settings = (loaded := current()).settings  # every argument left out comes from it
        #: Whether name and URL came from the settings (not the constructor): such a
        #: shadow is the application's, which the worker and the pytest plugin adopt.
        self.configured = name is None and url is None and connection_pool is None
        self.name = validate_name(name if name is not None else settings.name)
        url = url if url is not None else settings.url
        self.url = normalize_url(url) if connection_pool is None else url
        self.keys = Keys(self.name)
        self.execution_ttl = _pick(execution_ttl, settings.execution_ttl)
        self.dead_letter_ttl = _pick(dead_letter_ttl, settings.dead_letter_ttl)
        #: Whether the return values of tasks are kept (a task may opt out on its own).
        self.results = _pick(results, settings.results)
        self.result_max_bytes = _pick(result_max_bytes, settings.result_max_bytes)
        if self.result_max_bytes <= 0:
            raise ValueError(f"result_max_bytes must be positive, not {self.result_max_bytes}")
        self.dead_letter_limit = _pick(dead_letter_limit, settings.dead_letter_limit)
        #: How many shards the queue is spread over (see :mod:`shadows.core.keys`).
        self.shards = _pick(shards, settings.shards)
        if self.shards < 1:
            raise ValueError(f"shards must be at least 1, not {self.shards}")
        self.heartbeat_interval, self.missed_heartbeats = check_heartbeats(
            _pick(heartbeat_interval, settings.worker.heartbeat_interval),
            _pick(missed_heartbeats, settings.worker.missed_heartbeats),
        )
        if codec is None:
            codec = settings.codec
        if signing_key is None and settings.signing_key is not None:
            signing_key = settings.signing_key.get_secret_value()
        self.payloads = Payloads(
            codec_named(codec) if isinstance(codec, str) else codec,
            signing_key.encode() if isinstance(signing_key, str) else signing_key,
            self.name,
            _pick(max_message_age, settings.max_message_age),
        )
        self.tasks: dict[str, TaskFunction] = {}
        self._pool = connection_pool
        self._link: Link | None = None
        #: The open debounce burst of each bucket, as last seen (see :mod:`debouncing`).
        self.open_bursts: dict[str, str] = {}
        self.debounce_tables = debouncing.tables(loaded)  # [task.NAME] debounce tables

        for function in standard_tasks:
            self.register(function)
        if self.configured:
            configured_shadows.add(self)

    def __repr__(self) -> str:
        return f"Shadow(name={self.name!r}, url={redact_url(self.url)!r})"

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.link()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; the next use opens a new one."""
        link, self._link = self._link, None
        if link is None:
            return
        if link.loop is asyncio.get_running_loop():
            await link.close()
        else:
            link.abandon(own_pool=self._pool is None)

    def link(self) -> Link:
        """The connection of this shadow on the running loop, opened on first use (a
        connection of another, or a closed, loop is let go: see :mod:`link`)."""
        link = self._link
        if link is None or link.loop is not asyncio.get_running_loop():
            if link is not None:
                link.abandon(own_pool=self._pool is None)
            link = self._link = Link(self.url, self._pool)
        return link

    def retarget(self, name: str, url: str) -> None:
        """Point this shadow at another shadow name and URL (the pytest plugin isolates
        the application's shadow this way); the next use opens a new connection."""
        self.name = validate_name(name)
        self.url = normalize_url(url)
        self.keys = Keys(self.name)
        self.payloads.shadow = self.name  # signatures bind the shadow's name
        link, self._link = self._link, None
        if link is not None:
            link.abandon(own_pool=self._pool is None)

    @property
    def codec(self) -> Codec:
        """The codec task arguments are encoded with."""
        return self.payloads.codec

    @property
    def client(self) -> Redis | RedisCluster:
        return self.link().client

    @property
    def scripts(self) -> Scripts:
        return self.link().scripts

    @asynccontextmanager
    async def redis(self) -> AsyncIterator[Redis | RedisCluster]:
        """The Redis client of this shadow, for advanced use."""
        yield self.client

    async def ensure_group(self) -> None:
        """Create the stream and the workers' consumer group of every shard that may hold
        work (see :mod:`shadows.core.layout`) where they do not exist yet."""
        for keys in await every_shard(self):
            try:
                await self.client.xgroup_create(keys.stream, WORKER_GROUP, id="0", mkstream=True)
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    # -- tasks -----------------------------------------------------------------------

    # -- scheduling ------------------------------------------------------------------

    @overload
    def add(
        self, function: Callable[P, Any], when: datetime | None = None, key: str | None = None
    ) -> Callable[P, Awaitable[Execution]]: ...

    @overload
    def add(
        self, function: str, when: datetime | None = None, key: str | None = None
    ) -> Callable[..., Awaitable[Execution]]: ...

    def add(
        self,
        function: Callable[P, Any] | str,
        when: datetime | None = None,
        key: str | None = None,
    ) -> Callable[P, Awaitable[Execution]] | Callable[..., Awaitable[Execution]]:
        """Schedule ``function`` at ``when`` (now if ``None`` or past) under ``key``.

        Returns a function taking the task's own arguments; awaiting it schedules the call.
        While a task with the same ``key`` is scheduled, queued or running, adding it again
        does nothing.
        """
        return self._scheduler(function, when, key, mode="add")

    @overload
    def replace(
        self, function: Callable[P, Any], when: datetime | None, key: str
    ) -> Callable[P, Awaitable[Execution]]: ...

    @overload
    def replace(
        self, function: str, when: datetime | None, key: str
    ) -> Callable[..., Awaitable[Execution]]: ...

    def replace(
        self, function: Callable[P, Any] | str, when: datetime | None, key: str
    ) -> Callable[P, Awaitable[Execution]] | Callable[..., Awaitable[Execution]]:
        """Atomically swap the time and arguments of the task ``key`` (or schedule it).

        A task a worker has already started is left alone.
        """
        if not isinstance(key, str) or not key:
            raise ValueError("replace() needs the key of the task to replace")
        return self._scheduler(function, when, key, mode="replace")

    def _scheduler(
        self, function: TaskFunction | str, when: datetime | None, key: str | None, mode: str
    ) -> Callable[..., Awaitable[Execution]]:
        call = self.caller(function, when, key)

        async def schedule(*args: Any, **kwargs: Any) -> Execution:
            execution = call(*args, **kwargs)
            await self.schedule(execution, mode=mode)
            return execution

        return schedule

    def caller(
        self, function: TaskFunction | str, when: datetime | None, key: str | None
    ) -> Callable[..., Execution]:
        """Checks the arguments of a call of ``function`` and makes its Execution."""
        task = self._resolve_task(function)
        moment = validate_when(when)
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError(f"A task key must be a non-empty string, not {key!r}")
        plan = plan_for(task)
        signature, positional = plan.signature, plan.positional

        def call(*args: Any, **kwargs: Any) -> Execution:
            # The common call (positional arguments only, a plain signature) is checked
            # by counting; anything else is bound to the signature.
            if kwargs or positional is None or not positional[0] <= len(args) <= positional[1]:
                try:
                    signature.bind(*args, **kwargs)
                except TypeError as error:
                    raise TypeError(f"{task_name(task)}(): {error}") from None
            return Execution(
                task, args, kwargs, moment or datetime.now(UTC), key or str(uuid.uuid4())
            ).bind(self)

        return call

    def batch(self, size: int = 1000) -> Batch:
        """Collect adds and send them together, ``size`` at a time, when the block ends.

        ``async with shadows.batch() as batch: batch.add(task)(1)``: each add checks its
        arguments at once and returns the :class:`Execution`; the tasks are written in
        pipelines of ``size`` when the block ends without an error (nothing is written if
        it raises). Keys stay idempotent, within the batch too. ``batch.outcomes`` then
        holds ``queued``, ``scheduled`` or ``exists`` for each add, in order.
        """
        return Batch(self, size)

    async def schedule(self, execution: Execution, mode: str = "add") -> str:
        """Write ``execution`` to Redis; returns ``queued``, ``scheduled`` or ``exists``."""
        plan = plan_for(execution.function)
        debounce = debouncing.debounce_of(self, plan, execution.function_name)
        if debounce is not None:
            return await debouncing.submit(self, execution, debounce, mode)
        with producing(self.name, execution, mode) as context:
            message = execution.to_message(self.payloads, extra=context)
            shard = await sharding.route(self, execution.key, plan)
            state = await self.schedule_message(message, mode, shard)
        execution.shadow = on_shard(self, shard)
        placed = _PLACED.get(state)
        if placed is not None:
            execution.state = placed
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s: %s", mode, execution, state)
        return state

    def _holder(self, key: str) -> str:
        """The stream id of the run of ``key`` this code runs inside, if any ('' if none):
        that run may schedule its own successor."""
        holder = current_holder.get()
        if holder is None or holder.key != key or holder.shadow != self.name:
            return ""
        return holder.message_id

    async def schedule_message(
        self, message: Message, mode: str = "add", shard: int | None = None
    ) -> str:
        """Write an already encoded ``message`` (see :meth:`schedule`) to ``shard``
        (``None``: where :mod:`sharding` routes it)."""
        key = message.key
        if shard is None:
            shard = await sharding.route(self, key, sharding.plan_of(self, message.function))
        keys = self.keys.of_shard(shard)
        names = [keys.stream, keys.queue, keys.run(key), keys.parked(key), keys.successor(key)]
        args: list[str | bytes | int] = [key, message.when_ms, now_ms(), mode, WORKER_GROUP]
        args += [self._holder(key), *message.fields()]
        link = self.link()
        if link.lane is not None:
            outcome = await link.lane.call(link.scripts.schedule, names, args)
        else:
            outcome = await link.scripts.schedule(keys=names, args=args)
        return self.scheduled(message, outcome)

    async def add_messages(
        self, messages: Sequence[Message], pipe: Pipeline | Redis | RedisCluster, shard: int = 0
    ) -> Any:
        """One script call adding all of ``messages`` to ``shard``, queued on a pipeline or
        sent; its reply (:func:`scripts.outcome_pairs`) holds each one's outcome."""
        keys = self.keys.of_shard(shard)
        names: list[str] = [keys.stream, keys.queue]
        args: list[Any] = [now_ms(), "add", WORKER_GROUP]
        for message in messages:
            key = message.key
            names += (keys.run(key), keys.parked(key), keys.successor(key))
            fields = message.fields()
            args += (key, message.when_ms, self._holder(key), len(fields), *fields)
        return await self.scripts.schedule_many(keys=names, args=args, client=pipe)

    def scheduled(self, message: Message, outcome: Any) -> str:
        """The state a SCHEDULE script answered for ``message`` (and count the add)."""
        state = _text(outcome[0])
        if state != "exists":
            task_added(self.name, message.function)
        return state

    async def cancel(self, key: str) -> bool:
        """Cancel the task ``key``, wherever it is; ``False`` if there is nothing to cancel
        (unknown, or already ended).

        Scheduled or queued work is removed at once. Running work (or work a worker has
        received) is revoked: the worker running it cancels it within about a second, and
        no retry, redelivered copy, next perpetual run or successor of it runs, on any
        worker, even after a crash or a Redis restart (see ``docs/execution-state.md``).
        Its state becomes ``cancelled`` once the worker has stopped it. From inside the
        run of ``key``, this removes the successor that run scheduled for its own key.
        """
        return bool(await executions.cancel(self, key, self._holder(key)))

    async def get_execution(self, key: str) -> Execution | None:
        """The execution ``key`` as it stands now (``None`` if unknown: never added, or
        ended longer than ``execution_ttl`` ago). Its arguments are not read (``args``
        and ``kwargs`` are empty); its function is the registered one, else a stand-in
        of the same name."""
        return await executions.get_execution(self, key)

    async def task_state(self, key: str) -> str | None:
        """``scheduled``, ``queued``, ``running``, ``completed``, ``failed``, ``cancelled``
        (or ``stricken``, ``skipped``): the record's own word (``None`` if unknown: never
        added, or finished longer than ``execution_ttl`` ago). See :meth:`get_execution`."""
        keys = self.keys.of_shard(await sharding.locate(self, key))
        state = await self.client.hget(keys.run(key), "state")
        return _text(state) if state is not None else None

    # -- dead letters -----------------------------------------------------------------

    async def failed(self, limit: int = 1000) -> list[DeadLetter]:
        """Tasks that failed for good (newest first), kept for ``dead_letter_ttl``."""
        return await dead_letters.list_failed(self, limit)

    async def failed_task(self, key: str) -> DeadLetter | None:
        """The dead letter of ``key``, with its error and traceback."""
        return await dead_letters.get_failed(self, key)

    async def retry_failed(self, key: str, *, force_unverified: bool = False) -> str:
        """Enqueue a dead-lettered task again, now, from attempt 1. With a signing key,
        only a letter whose signature verifies, unless ``force_unverified`` (logged)."""
        return await dead_letters.retry_failed(self, key, self.schedule_message, force_unverified)

    async def purge_failed(self, key: str | None = None) -> int:
        """Forget one dead letter, or all of them."""
        return await dead_letters.purge_failed(self, key)

    async def clear(self) -> int:
        """Remove all scheduled and queued (not yet started) work; returns how many."""
        return await clearing.clear(self)

    # -- strikes ---------------------------------------------------------------------

    async def strike(
        self,
        function: TaskFunction | str | None = None,
        parameter: str | None = None,
        operator: Operator = "==",
        value: Any = None,
    ) -> bool:
        """Stop running ``function`` at all, or only its calls where ``<parameter> <operator>
        <value>`` holds; ``function=None`` strikes every task that has ``parameter``.

        Every worker honours it within about a second, and so do workers started later.
        Stricken calls are acknowledged without running (state ``stricken``), logged and
        counted. Returns ``False`` when the same strike was already in effect.
        """
        strike = strike_for(function, parameter, operator, value, self.tasks, self.payloads, True)
        return await striking.strike(self, strike)

    async def restore(
        self,
        function: TaskFunction | str | None = None,
        parameter: str | None = None,
        operator: Operator = "==",
        value: Any = None,
    ) -> bool:
        """Lift the strike given by the same arguments as :meth:`strike`; later matching calls
        run again (calls already stricken are not brought back). Returns ``False`` when no
        such strike was in effect."""
        strike = strike_for(function, parameter, operator, value, self.tasks, self.payloads, False)
        return await striking.restore(self, strike)

    async def strikes(self) -> list[Strike]:
        """The strikes in effect, oldest first (each with ``since``, when it was struck)."""
        return await striking.in_effect(self)

    # -- inspection ------------------------------------------------------------------

    async def snapshot(self, arguments: bool = True) -> Snapshot:
        """Every future, queued and running task, and the live workers.

        Read in pages (fast for hundreds of thousands of tasks) but not atomically: see
        :mod:`shadows.snapshot`. Tasks carry their function (when registered here) and
        their arguments, decoded on first use; ``arguments=False`` leaves the arguments
        out, for a third to half of the work.
        """
        return await take_snapshot(self, self.tasks, arguments)

    async def workers(self) -> list[WorkerInfo]:
        """The live workers (those whose heartbeat has not lapsed), by name."""
        return await list_workers(self)

    async def task_workers(self, task: TaskFunction | str) -> list[WorkerInfo]:
        """The live workers that have the task ``task`` (a function or its name)."""
        if not isinstance(task, str) and not callable(task):
            raise TypeError(f"Expected a task function or name, not {task!r}")
        name = task if isinstance(task, str) else task_name(task)
        return await list_workers(self, name)


def _pick(given: T | None, configured: T) -> T:
    """A constructor argument, else the setting."""
    return configured if given is None else given


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

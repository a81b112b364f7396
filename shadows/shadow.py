"""The producer side: a named, shared collection of work in Redis."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, overload

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from . import dead_letters
from .batch import Batch
from .connection import create_client, is_memory, normalize_url, redact_url
from .dead_letters import DeadLetter
from .dependencies import plan_for
from .durations import duration_from_env
from .execution import Execution, Message, current_holder, now_ms
from .functions import describe, load_collection, task_name
from .instrumentation import producing
from .keys import WORKER_GROUP, Keys, validate_name
from .lane import Lane
from .metrics import task_added
from .registry import (
    HEARTBEAT_INTERVAL,
    MISSED_HEARTBEATS,
    WorkerInfo,
    check_heartbeats,
    list_workers,
)
from .scripts import Scripts
from .serialization import Codec, Payloads, codec_named
from .snapshot import Snapshot, take_snapshot
from .strikes import FEED_LENGTH, Operator, Strike, read_strikes

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("shadows.shadow")

TaskFunction = Callable[..., Any]

DEFAULT_NAME = "shadows"
DEFAULT_URL = "redis://localhost:6379/0"


class UnknownTaskError(KeyError):
    """A task name that is not registered on this shadow.

    A ``KeyError`` because it is a failed lookup by name (code that catches ``KeyError``
    catches it), but printed as its message rather than as the quoted repr of one.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown task"


class Shadow:
    """One named queue of work shared by every producer and worker with the same URL.

    Use it as an async context manager. ``url`` may be ``redis://``, ``rediss://``,
    ``unix://``, ``valkey://``, ``valkeys://`` or ``memory://`` (an in-process server);
    or pass ``connection_pool=`` to reuse your own redis-py pool. ``name`` and ``url``
    default to ``$SHADOW_NAME`` and ``$SHADOW_URL``, else ``"shadows"`` and
    ``"redis://localhost:6379/0"``. ``codec`` (``"pickle"``, ``"json"``, ``"msgpack"`` or a
    codec object; default ``$SHADOW_CODEC`` or pickle) and ``signing_key`` (default
    ``$SHADOW_SIGNING_KEY``) choose how payloads are encoded and whether they are signed;
    with a key, ``max_message_age`` (default ``$SHADOW_MAX_MESSAGE_AGE``, else none) refuses
    to run signed messages older than that.
    Its workers beat every ``heartbeat_interval`` (unless given their own) and drop out
    of the registry after ``missed_heartbeats`` intervals without a beat.
    """

    def __init__(
        self,
        name: str | None = None,
        url: str | None = None,
        *,
        connection_pool: ConnectionPool | None = None,
        execution_ttl: timedelta = timedelta(minutes=15),
        codec: Codec | str | None = None,
        signing_key: str | bytes | None = None,
        dead_letter_ttl: timedelta = timedelta(days=7),
        dead_letter_limit: int = 10_000,
        heartbeat_interval: timedelta = HEARTBEAT_INTERVAL,
        missed_heartbeats: int = MISSED_HEARTBEATS,
        max_message_age: timedelta | None = None,
    ) -> None:
        if name is None:
            name = os.environ.get("SHADOW_NAME") or DEFAULT_NAME
        if url is None:
            url = os.environ.get("SHADOW_URL") or DEFAULT_URL
        self.name = validate_name(name)
        self.url = normalize_url(url) if connection_pool is None else url
        self.keys = Keys(self.name)
        self.execution_ttl = execution_ttl
        self.dead_letter_ttl = dead_letter_ttl
        self.dead_letter_limit = dead_letter_limit
        self.heartbeat_interval, self.missed_heartbeats = check_heartbeats(
            heartbeat_interval, missed_heartbeats
        )
        if codec is None:
            codec = os.environ.get("SHADOW_CODEC") or "pickle"
        if signing_key is None:
            signing_key = os.environ.get("SHADOW_SIGNING_KEY") or None
        self.payloads = Payloads(
            codec_named(codec) if isinstance(codec, str) else codec,
            signing_key.encode() if isinstance(signing_key, str) else signing_key,
            self.name,
            duration_from_env("SHADOW_MAX_MESSAGE_AGE")
            if max_message_age is None
            else max_message_age,
        )
        self.tasks: dict[str, TaskFunction] = {}
        self._pool = connection_pool
        self._client: Redis | None = None
        self._scripts: Scripts | None = None
        self._lane: Lane | None = None

        from .tasks import standard_tasks

        for function in standard_tasks:
            self.register(function)

    def __repr__(self) -> str:
        return f"Shadow(name={self.name!r}, url={redact_url(self.url)!r})"

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._client = create_client(self.url, self._pool)
        self._scripts = Scripts(self._client)
        # The embedded backend has no sockets to save work on.
        self._lane = None if is_memory(self.url) else Lane(self._client)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        client, self._client, self._scripts = self._client, None, None
        lane, self._lane = self._lane, None
        if lane is not None:
            await lane.close()
        if client is not None:
            await client.aclose()

    @property
    def codec(self) -> Codec:
        """The codec task arguments are encoded with."""
        return self.payloads.codec

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise _not_open()
        return self._client

    @property
    def scripts(self) -> Scripts:
        if self._scripts is None:
            raise _not_open()
        return self._scripts

    @asynccontextmanager
    async def redis(self) -> AsyncIterator[Redis]:
        """The Redis client of this shadow, for advanced use."""
        yield self.client

    async def ensure_group(self) -> None:
        """Create the stream and the workers' consumer group if they do not exist yet."""
        try:
            await self.client.xgroup_create(self.keys.stream, WORKER_GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    # -- tasks -----------------------------------------------------------------------

    def register(self, function: TaskFunction) -> None:
        """Make ``function`` runnable by name on this shadow's workers."""
        if not callable(function):
            raise TypeError(f"A task must be a function or callable object, not {function!r}")
        name = task_name(function)
        plan_for(function)  # validates the dependency declarations early
        self.tasks[name] = function

    def register_collection(self, path: str) -> None:
        """Register every function of the list at ``"package.module:attribute"``."""
        for function in load_collection(path):
            self.register(function)

    def _resolve_task(self, function: TaskFunction | str) -> TaskFunction:
        if isinstance(function, str):
            try:
                return self.tasks[function]
            except KeyError:
                known = ", ".join(sorted(self.tasks)) or "none"
                raise UnknownTaskError(
                    f"Unknown task {function!r} on shadow {self.name!r} (registered: {known})"
                ) from None
        if not callable(function):
            raise TypeError(f"A task must be a function or a registered name, not {function!r}")
        registered = self.tasks.get(task_name(function))
        # A bound method is a new object at every access, but an equal one.
        if registered is not function and registered != function:
            self.register(function)
        return function

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
        moment = _validate_when(when)
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
            )

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
        with producing(self.name, execution, mode) as context:
            message = execution.to_message(self.payloads, extra=context)
            state = await self.schedule_message(message, mode)
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

    async def schedule_message(self, message: Message, mode: str = "add") -> str:
        """Write an already encoded ``message`` (see :meth:`schedule`)."""
        keys = self.keys
        key = message.key
        names = [keys.stream, keys.queue, keys.run(key), keys.parked(key), keys.successor(key)]
        args: list[str | bytes | int] = [key, message.when_ms, now_ms(), mode, WORKER_GROUP]
        args += [self._holder(key), *message.fields()]
        if self._lane is not None:
            outcome = await self._lane.call(self.scripts.schedule, names, args)
        else:
            outcome = await self.scripts.schedule(keys=names, args=args)
        return self.scheduled(message, outcome)

    async def add_messages(self, messages: Sequence[Message], pipe: Pipeline) -> None:
        """Queue on ``pipe`` one script call adding all of ``messages``; its reply, read
        with :func:`scripts.outcome_pairs`, holds each one's outcome for :meth:`scheduled`."""
        keys = self.keys
        names: list[str] = [keys.stream, keys.queue]
        args: list[Any] = [now_ms(), "add", WORKER_GROUP]
        for message in messages:
            key = message.key
            names += (keys.run(key), keys.parked(key), keys.successor(key))
            fields = message.fields()
            args += (key, message.when_ms, self._holder(key), len(fields), *fields)
        await self.scripts.schedule_many(keys=names, args=args, client=pipe)

    def scheduled(self, message: Message, outcome: Any) -> str:
        """The state a SCHEDULE script answered for ``message`` (and count the add)."""
        state = _text(outcome[0])
        if state != "exists":
            task_added(self.name, message.function)
        return state

    async def cancel(self, key: str) -> bool:
        """Remove the future task ``key``; ``False`` if it is not waiting in the queue.

        A task already moved to the ready stream (due, or added without ``when``) cannot be
        cancelled. From inside the run of ``key``, this removes the successor that run
        scheduled for its own key.
        """
        keys = self.keys
        removed = await self.scripts.cancel(
            keys=[keys.queue, keys.run(key), keys.parked(key), keys.successor(key)],
            args=[key, self._holder(key)],
        )
        return bool(removed)

    async def task_state(self, key: str) -> str | None:
        """``scheduled``, ``queued``, ``running``, ``completed`` or ``failed`` (``None`` if
        unknown: never added, cancelled, or finished longer than ``execution_ttl`` ago)."""
        state = await self.client.hget(self.keys.run(key), "state")
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
        return await dead_letters.retry_failed(self, key, force_unverified)

    async def purge_failed(self, key: str | None = None) -> int:
        """Forget one dead letter, or all of them."""
        return await dead_letters.purge_failed(self, key)

    async def clear(self) -> int:
        """Remove all scheduled and queued (not yet started) work; returns how many."""
        keys = self.keys
        total = 0
        while True:
            removed = int(
                await self.scripts.clear(
                    keys=[keys.queue, keys.stream], args=[WORKER_GROUP, keys.prefix, 500]
                )
            )
            if not removed:
                return total
            total += removed

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
        strike = self._strike(function, parameter, operator, value, check=True)
        changed = await self._change_strikes("strike", [strike.encode(self.payloads)])
        if changed:
            logger.info("Struck %s on shadow %s", strike, self.name)
        return bool(changed)

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
        strike = self._strike(function, parameter, operator, value, check=False)
        fields = {strike.encode(self.payloads)}
        current, broken = await read_strikes(self.client, self.keys, self.payloads)
        fields.update(f for f, existing in current.items() if existing.named_by(strike))
        fields.update(f for f, unreadable in broken.items() if unreadable.describes(strike))
        changed = await self._change_strikes("restore", sorted(fields))
        if changed:
            logger.info("Restored %s on shadow %s", strike, self.name)
        return bool(changed)

    async def strikes(self) -> list[Strike]:
        """The strikes in effect, oldest first (each with ``since``, when it was struck)."""
        current, broken = await read_strikes(self.client, self.keys, self.payloads)
        for unreadable in broken.values():
            logger.warning("Cannot read the strike %s: %s", unreadable, unreadable.reason)
        return list(current.values())

    def _strike(
        self,
        function: TaskFunction | str | None,
        parameter: str | None,
        operator: Operator,
        value: Any,
        check: bool,
    ) -> Strike:
        if function is None or isinstance(function, str):
            name = function
        elif callable(function):
            name = task_name(function)
        else:
            raise TypeError(f"Strike a task function, a task name or None, not {function!r}")
        strike = Strike(name, parameter, operator, value)
        if check and parameter is not None and name is not None:
            target = function if callable(function) else self.tasks.get(name)
            if target is not None:
                _check_parameter(target, parameter)
        strike.encode(self.payloads)  # fails now, clearly, for a value that cannot be stored
        return strike

    async def _change_strikes(self, action: str, fields: list[str]) -> int:
        keys = self.keys
        changed = await self.scripts.strike(
            keys=[keys.strikes_in_effect, keys.strikes],
            args=[action, FEED_LENGTH, *fields],
        )
        return int(changed)

    # -- inspection ------------------------------------------------------------------

    async def snapshot(self, arguments: bool = True) -> Snapshot:
        """Every future, queued and running task, and the live workers.

        Read in pages (fast for hundreds of thousands of tasks) but not atomically: see
        :mod:`shadows.snapshot`. Tasks carry their function (when registered here) and
        their arguments, decoded on first use; ``arguments=False`` leaves the arguments
        out, for a third to half of the work.
        """
        return await take_snapshot(self, arguments)

    async def workers(self) -> list[WorkerInfo]:
        """The live workers (those whose heartbeat has not lapsed), by name."""
        return await list_workers(self)

    async def task_workers(self, task: TaskFunction | str) -> list[WorkerInfo]:
        """The live workers that have the task ``task`` (a function or its name)."""
        if not isinstance(task, str) and not callable(task):
            raise TypeError(f"Expected a task function or name, not {task!r}")
        name = task if isinstance(task, str) else task_name(task)
        return await list_workers(self, name)


def _check_parameter(function: TaskFunction, parameter: str) -> None:
    """Catch a misspelt parameter now rather than strike nothing in silence."""
    from .dependencies import Dependency

    parameters = plan_for(function).signature.parameters
    found = parameters.get(parameter)
    name = describe(function)
    if found is not None:
        if found.kind in (found.VAR_POSITIONAL, found.VAR_KEYWORD):
            raise ValueError(f"{name}(): strike a named parameter, not *{parameter}/**{parameter}")
        if isinstance(found.default, Dependency):
            raise ValueError(
                f"{name}(): {parameter!r} is a dependency, not an argument a strike can test"
            )
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    known = ", ".join(parameters) or "none"
    raise ValueError(f"{name}() has no parameter {parameter!r} (parameters: {known})")


def _not_open() -> RuntimeError:
    return RuntimeError("This Shadow is not open: use it as `async with Shadow(...) as shadows:`")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _validate_when(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    if not isinstance(when, datetime):
        raise TypeError(f"when must be a timezone-aware datetime, not {type(when).__name__}")
    if when.tzinfo is None or when.tzinfo.utcoffset(when) is None:
        raise ValueError(
            "when must be timezone-aware (for example datetime.now(timezone.utc)); "
            f"got the naive datetime {when.isoformat()}"
        )
    return when

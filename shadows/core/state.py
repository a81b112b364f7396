"""The live state of one execution, read from its run record in Redis.

Every task key has a run record (``{name}:run:{key}``, see :mod:`keys`): its state,
times, progress and, once it ends, its error or result, kept for ``execution_ttl``. The
workers' scripts write it in the same atomic steps that move the task, so reading it
costs one command and never sees half of a change. Every change that matters to a
watcher (running, progress, the end) is also published on ``{name}:run:{key}:events``
(running and the end only for a run a watcher has marked ``watched``, so that a task
nobody watches pays no PUBLISH): the event only wakes a watcher, which then reads the
record, so a missed event delays nothing but the next read and loses nothing.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from shadows.core.connection import node_client
from shadows.core.keys import Keys
from shadows.core.state_scripts import WATCH

logger = logging.getLogger("shadows.state")

#: How often a watcher reads the record again without any event (a safety net for an
#: event lost on a reconnection; the events themselves come at once).
RECHECK_SECONDS = 2.0

#: The fields of a run record that describe its state (the result is read on its own).
STATE_FIELDS = (
    "state", "function", "attempt", "when", "worker", "started", "finished", "error",
    "progress_current", "progress_total", "progress_message",
)  # fmt: skip


class ExecutionState(enum.StrEnum):
    """Where an execution stands. The last three are final."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in _FINAL

    @classmethod
    def of(cls, text: str) -> ExecutionState:
        """The state a record's ``state`` field stands for: a call not run because of a
        strike or a ``run_at_most`` cap counts as cancelled."""
        try:
            return cls(text)
        except ValueError:
            return cls.CANCELLED if text in NOT_RUN else cls.FAILED


#: Final states of a call that was not run: a strike, a ``run_at_most`` cap, a cooldown
#: or rate limit (see ``docs/flow-control.md``).
NOT_RUN = frozenset({"stricken", "skipped", "dropped"})

_FINAL = frozenset({ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED})


@dataclass(frozen=True, slots=True)
class ExecutionProgress:
    """What a running task reported through :class:`~shadows.Progress`."""

    current: int = 0
    total: int | None = None
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        """``current / total`` between 0 and 1, when a total is known."""
        if not self.total:
            return None
        return max(0.0, min(1.0, self.current / self.total))

    def to_json(self) -> dict[str, Any]:
        return {"current": self.current, "total": self.total, "message": self.message}


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One reading of a run record."""

    state: ExecutionState
    raw_state: str
    function: str
    attempt: int
    when: datetime | None
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    progress: ExecutionProgress


@dataclass(frozen=True, slots=True)
class ExecutionEvent:
    """One change seen by :meth:`Execution.subscribe`: ``kind`` is ``"state"`` (a new
    state) or ``"progress"`` (new progress while it runs)."""

    kind: str
    key: str
    state: ExecutionState
    progress: ExecutionProgress
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"event": self.kind, "key": self.key, "state": str(self.state)}
        document["progress"] = self.progress.to_json()
        if self.error is not None:
            document["error"] = self.error
        return document


class ExecutionCancelled(Exception):
    """Raised by ``get_result`` for an execution that was cancelled (or not run)."""


class ResultError(Exception):
    """Raised by ``get_result`` for a run that completed but whose return value was not
    kept: it could not be encoded with the shadow's codec, or (:class:`ResultTooLarge`)
    it was above ``result_max_bytes``."""


class ResultTooLarge(ResultError):
    """A task's encoded return value above ``result_max_bytes``, refused."""


class RemoteError(Exception):
    """Stands for a task's exception whose type cannot be rebuilt here."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message


class _Results(Protocol):
    def open_result(self, key: str, data: bytes, codec: str, signature: str | None) -> Any: ...


class Source(Protocol):
    """What reading a record needs of a shadow (no import of it: no cycle)."""

    name: str
    keys: Keys

    @property
    def payloads(self) -> _Results: ...

    @property
    def client(self) -> Redis | RedisCluster: ...


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _int(value: bytes | str | None) -> int | None:
    text = _text(value)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def parse_record(values: list[Any]) -> RunRecord | None:
    """A :class:`RunRecord` from the values of :data:`STATE_FIELDS`, or ``None``."""
    fields = dict(zip(STATE_FIELDS, (_text(v) for v in values), strict=True))
    raw = fields["state"]
    if raw is None:
        return None
    started, finished = _int(fields["started"]), _int(fields["finished"])
    progress = ExecutionProgress(
        _int(fields["progress_current"]) or 0,
        _int(fields["progress_total"]),
        fields["progress_message"],
    )
    return RunRecord(
        state=ExecutionState.of(raw),
        raw_state=raw,
        function=fields["function"] or "",
        attempt=_int(fields["attempt"]) or 1,
        when=from_ms(when) if (when := _int(fields["when"])) is not None else None,
        worker=fields["worker"],
        started_at=from_ms(started) if started is not None else None,
        finished_at=from_ms(finished) if finished is not None else None,
        error=fields["error"],
        progress=progress,
    )


async def read_record(source: Source, key: str) -> RunRecord | None:
    """The run record of ``key`` as it stands now (one HMGET)."""
    values = await source.client.hmget(source.keys.run(key), list(STATE_FIELDS))
    return parse_record(values)


async def watch(source: Source, key: str) -> AsyncIterator[ExecutionEvent]:
    """The state and progress changes of ``key`` until it ends (see the module)."""
    # Pub/sub runs on one server (on a cluster, the node of the record: a script's
    # PUBLISH reaches every node).
    server = await node_client(source.client, source.keys.run(key))
    pubsub: Any = server.pubsub()
    try:
        await pubsub.subscribe(source.keys.events(key))
        last: RunRecord | None = None
        record = await read_record(source, key)
        if record is not None and not record.state.final:
            record = await _mark_watched(source, key)
            if record is None:  # not allowed to ask for announcements: read every 2 s
                await pubsub.aclose()
                pubsub = None
                record = await read_record(source, key)
        while True:
            if last is not None:
                record = await read_record(source, key)
            if record is None:
                return
            if last is None or record.state != last.state:
                yield ExecutionEvent("state", key, record.state, record.progress, record.error)
            elif record.progress != last.progress:
                yield ExecutionEvent("progress", key, record.state, record.progress)
            if record.state.final:
                return
            last = record
            if pubsub is None:
                await asyncio.sleep(RECHECK_SECONDS)
            elif not await _next_event(pubsub, key):
                await pubsub.aclose()
                pubsub = None
    finally:
        try:
            if pubsub is not None:
                await pubsub.aclose()
        finally:
            if server is not source.client:
                await server.aclose()


async def _mark_watched(source: Source, key: str) -> RunRecord | None:
    """Mark the run of ``key`` watched (the workers announce its changes only then) and
    read it in the same step; ``None`` when the user may not (a read-only ACL user: it
    then reads the record every :data:`RECHECK_SECONDS`)."""
    script = source.client.register_script(WATCH)
    try:
        values = await script(keys=[source.keys.run(key)], args=list(STATE_FIELDS))
    except ResponseError as error:
        logger.debug("Cannot ask for the events of %s (%s): reading the record", key, error)
        return None
    return parse_record(values)


async def _next_event(pubsub: Any, key: str) -> bool:
    """Wait for one published event (or :data:`RECHECK_SECONDS`), then drain the rest;
    ``False`` when the server refuses the subscription (an ACL user without the
    channel: the watcher then only reads the record every :data:`RECHECK_SECONDS`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECHECK_SECONDS
    try:
        while (left := deadline - loop.time()) > 0:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is not None:
                break
        while await pubsub.get_message(ignore_subscribe_messages=True, timeout=0) is not None:
            pass
    except ResponseError as error:
        logger.debug("Not woken by the events of %s (%s): reading the record", key, error)
        return False
    return True


async def result_of(source: Source, key: str, timeout: float | None) -> Any:
    """Wait up to ``timeout`` seconds for ``key`` to end; its result, or its error raised."""
    async with asyncio.timeout(timeout):
        final: ExecutionState | None = None
        async for event in watch(source, key):
            final = event.state
        if final is None or not final.final:
            raise LookupError(
                f"No execution {key!r} on shadow {source.name!r} (never added, or it "
                "ended longer than execution_ttl ago)"
            )
    fields = (
        "state", "result", "result_codec", "result_signature", "error_type", "error_message",
        "result_error", "result_refused",
    )  # fmt: skip
    raw = await source.client.hmget(source.keys.run(key), list(fields))
    values = dict(zip(fields, raw, strict=True))
    state = ExecutionState.of(_text(values["state"]) or "failed")
    if state is ExecutionState.COMPLETED:
        refused = _text(values["result_error"])
        if refused:
            large = _text(values["result_refused"]) == "too-large"
            raise (ResultTooLarge if large else ResultError)(refused)
        data = values["result"]
        if isinstance(data, str):
            data = data.encode()
        if data is None:
            return None
        return source.payloads.open_result(
            key, data, _text(values["result_codec"]) or "", _text(values["result_signature"])
        )
    if state is ExecutionState.CANCELLED:
        raise ExecutionCancelled(f"Execution {key!r} was cancelled")
    raise rebuild_error(_text(values["error_type"]), _text(values["error_message"]) or "")


def error_fields(error: BaseException) -> list[str | bytes]:
    """The record fields describing a task's exception."""
    kind = type(error)
    return [
        "error", f"{kind.__name__}: {error}"[:16_000],
        "error_type", f"{kind.__module__}:{kind.__qualname__}",
        "error_message", str(error)[:16_000],
    ]  # fmt: skip


def rebuild_error(type_path: str | None, message: str) -> BaseException:
    """The task's exception, of its own type when that type is importable here (from a
    module already loaded: a record never makes this process import anything) and can be
    made from its message; else a :class:`RemoteError` naming it."""
    if not type_path:
        return RemoteError("Error", message)
    module_name, _, qualname = type_path.partition(":")
    target: Any = sys.modules.get(module_name)
    try:
        for part in qualname.split("."):
            target = getattr(target, part)
        if isinstance(target, type) and issubclass(target, Exception):
            return target(message)
    except Exception:
        pass
    return RemoteError(qualname.rsplit(".", 1)[-1] or "Error", message)

"""A task page by key: its run record, its message wherever it is, its dead letter.

Arguments are decoded only for tasks registered in the dashboard's process (``--tasks``),
because only their functions say which arguments are ``Logged``; those are shown as the
worker's log lines show them (each value capped by ``Logged``, the call by
:data:`CALL_LIMIT`), every other argument as ``...``. Decoding goes through the shadow's
payloads, so a message in another codec or with a bad signature is refused, as a worker
would refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shadows.core.annotations import render_call
from shadows.core.execution import Message, MessageError
from shadows.core.layout import key_shards
from shadows.dashboard.formatting import cap
from shadows.dashboard.results import Result, render_result
from shadows.operations.dead_letters import DeadLetter
from shadows.operations.dead_letters import parse as parse_dead_letter

if TYPE_CHECKING:
    from shadows.producer.shadow import Shadow

#: Longest rendered call shown on a page.
CALL_LIMIT = 4000


@dataclass(frozen=True, slots=True)
class Arguments:
    """The call as it may be shown, or why it is not."""

    call: str | None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class TaskView:
    key: str
    #: ``scheduled``, ``queued``, ``running``, ``completed``, ``failed``, ``cancelled``,
    #: ``stricken``, ... or ``None`` when Redis has no run record (unknown, or expired).
    state: str | None
    function: str
    attempt: int
    when_ms: int
    started_ms: int
    finished_ms: int
    worker: str
    #: Where its message is: ``queue``, ``stream``, ``dead letters`` or ``None``.
    found_in: str | None
    arguments: Arguments
    dead_letter: DeadLetter | None
    #: What a failed run raised (``"Type: message"``), from the run record.
    error: str = ""
    #: The task's progress report (``current``, ``total``, ``message``), if any.
    progress: dict[str, Any] | None = None
    #: What a completed run returned, as it may be shown (``None`` for other states).
    result: Result | None = None

    @property
    def exists(self) -> bool:
        return self.state is not None or self.found_in is not None

    @property
    def cancellable(self) -> bool:
        """Waiting or running: :meth:`Shadow.cancel` removes or stops it."""
        return self.state in ("scheduled", "queued", "running") or self.found_in == "queue"


async def find_task(shadow: Shadow, key: str) -> TaskView:
    client = shadow.client
    # The key's shard under each recorded count, and the home shard: the first holding
    # anything of it (see shadows.core.layout).
    for keys in await key_shards(shadow, key):
        async with client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.run(key))
            pipe.hgetall(keys.parked(key))
            pipe.zscore(keys.queue, key)
            pipe.hgetall(keys.dead(key))
            run, parked, score, dead = await pipe.execute()
        if run or parked or score is not None or dead:
            break
    record = {_text(k): _text(v) for k, v in run.items()}
    dead_letter = parse_dead_letter(key, dead)
    message: Message | None = None
    found_in: str | None = None
    if score is not None and parked:
        found_in, message = "queue", _message(parked)
    elif record.get("message"):
        entries = await client.xrange(keys.stream, record["message"], record["message"])
        if entries:
            found_in, message = "stream", _message(entries[0][1])
    if message is None and dead_letter is not None:
        found_in = "dead letters"
        try:
            message = dead_letter.message()
        except MessageError:
            message = None
    function = record.get("function") or (message.function if message else "")
    if not function and dead_letter is not None:
        function = dead_letter.function
    return TaskView(
        key=key,
        state=record.get("state"),
        function=function or "?",
        attempt=_int(record.get("attempt")) or (message.attempt if message else 0),
        when_ms=_int(record.get("when")) or (message.when_ms if message else 0),
        started_ms=_int(record.get("started")),
        finished_ms=_int(record.get("finished")),
        worker=record.get("worker", ""),
        found_in=found_in,
        arguments=render_arguments(shadow, function, message),
        dead_letter=dead_letter,
        error=record.get("error", ""),
        progress=_progress(record),
        result=render_result(shadow, key, record.get("state"), run),
    )


def _progress(record: dict[str, str]) -> dict[str, Any] | None:
    current, total = record.get("progress_current"), record.get("progress_total")
    message = record.get("progress_message")
    if not (current or total or message):
        return None
    return {"current": _int(current), "total": _int(total) or None, "message": message}


def render_arguments(shadow: Shadow, name: str, message: Message | None) -> Arguments:
    """The call with its ``Logged`` arguments, when this process has the task."""
    if message is None:
        return Arguments(None, "Its message is no longer stored (the run has ended).")
    function = shadow.tasks.get(name)
    if function is None:
        return Arguments(
            None,
            f"The task {name!r} is not registered in this dashboard, so its arguments stay "
            "hidden: start it with --tasks module:tasks to show the arguments the task "
            "marks Logged.",
        )
    try:
        args, kwargs = shadow.payloads.decode(message)
    except Exception as error:  # another codec, a bad signature, a codec error
        return Arguments(None, f"Its arguments cannot be decoded here: {type(error).__name__}")
    return Arguments(cap(render_call(function, args, kwargs), CALL_LIMIT))


def _message(fields: Any) -> Message | None:
    try:
        return Message.parse(fields)
    except MessageError:
        return None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _int(value: str | None) -> int:
    try:
        return int(float(value)) if value else 0
    except ValueError:
        return 0

"""A picture of everything a shadow holds: future, queued and running tasks, and workers.

Speed matters here, because a snapshot of a busy shadow may cover hundreds of thousands of
tasks, and redis-py parses replies in pure Python at microseconds per element. So each page
of tasks is read by one Lua script that packs the whole page into two strings: numbers per
task (due time, attempt, lengths of the text fields) and the concatenated bytes of those
fields. Python splits them with a few C-level calls per task and asks for the next page
before parsing the current one, so Redis and Python work at the same time.

Each task's function is looked up by name among those registered on the shadow (a dict
lookup per task name). Its arguments cost most (whole messages are needed, because a
message names its codec and may be signed over all its fields): they are read by default,
so that a snapshot's tasks read like executions, and decoded only when used;
``arguments=False`` skips them for monitoring that needs no more than name, key, due
time, attempt, state and worker (the CLI, huge queues).

Pages are separate script calls, so Redis is never blocked for long, but the whole is not
one atomic picture: a task that moves while the snapshot is taken (from the queue to the
stream, say) may be seen in both places, and is then reported once, in its later place,
or, when it moves backwards (a retry), missed.

This module holds the picture (:class:`Snapshot`, :class:`SnapshotTask`);
:mod:`snapshot_pages` reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from shadows.core.annotations import render_known_call
from shadows.core.execution import Message, from_ms
from shadows.core.serialization import Payloads
from shadows.operations.registry import WorkerInfo

if TYPE_CHECKING:
    pass

State = Literal["scheduled", "queued", "running"]

#: A message as a snapshot keeps it: its fields' names and values concatenated, and their
#: lengths (name, value, name, value, ...).
RawMessage = tuple[bytes, list[int]]


class ArgumentsNotRead(LookupError):
    """The arguments of a task in a snapshot taken with ``arguments=False``."""


class SnapshotTask:
    """One task in a snapshot: cheap to build; its arguments are decoded only when used.

    It has the attributes of an :class:`~shadows.Execution`, plus its ``state`` and,
    while it runs, the ``worker`` running it and when it ``started``. ``function`` is
    the task's function when it is registered on the shadow that took the snapshot, else
    its name (the process taking a snapshot need not have every task); ``function_name``
    is always the name. Reading ``args`` or ``kwargs`` decodes the message as a worker
    would: only in the shadow's own codec, and only with a valid signature when the
    shadow has a signing key.
    """

    __slots__ = (
        "_decoded",
        "_payloads",
        "_raw",
        "attempt",
        "function",
        "function_name",
        "key",
        "started_ms",
        "state",
        "when_ms",
        "worker",
    )

    def __init__(
        self,
        key: str,
        name: str,
        when_ms: int,
        attempt: int,
        state: State,
        raw: RawMessage | None,
        payloads: Payloads,
        worker: str | None = None,
        started_ms: int = 0,
        function: Callable[..., Any] | None = None,
    ) -> None:
        self.key = key
        self.function_name = name
        #: The registered function, else the task's name.
        self.function: Callable[..., Any] | str = name if function is None else function
        self.when_ms = when_ms
        self.attempt = attempt
        self.state: State = state
        self.worker = worker
        self.started_ms = started_ms
        self._raw = raw
        self._payloads = payloads
        self._decoded: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    @property
    def when(self) -> datetime:
        """When the task is (or was) due."""
        return from_ms(self.when_ms)

    @property
    def started(self) -> datetime | None:
        """When its worker started it (``None`` unless running and recorded)."""
        return from_ms(self.started_ms) if self.started_ms > 0 else None

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments, decoded on first use.

        Raises :class:`ArgumentsNotRead`, :class:`~shadows.serialization.PayloadError`
        (another codec, a bad signature), or whatever the codec raises.
        """
        return self._arguments()[0]

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments, decoded on first use."""
        return self._arguments()[1]

    def _arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self._decoded is None:
            if self._raw is None:
                raise ArgumentsNotRead(
                    f"The arguments of task {self.key!r} were not read: take the snapshot "
                    "with arguments=True"
                )
            text, lengths = self._raw
            fields: dict[bytes, bytes] = {}
            position = 0
            for i in range(0, len(lengths), 2):
                name_end = position + lengths[i]
                value_end = name_end + lengths[i + 1]
                fields[text[position:name_end]] = text[name_end:value_end]
                position = value_end
            self._decoded = self._payloads.decode(Message.parse(fields))
        return self._decoded

    def call_repr(self) -> str:
        """The call as a worker's log lines show it (``Logged`` arguments only) when the
        function is registered and the arguments were read and decode; else the name."""
        function = None if isinstance(self.function, str) else self.function
        return render_known_call(self.function_name, function, self._arguments)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form used by ``shadows snapshot --json`` (no arguments)."""
        started = self.started
        return {
            "key": self.key,
            "function": self.function_name,
            "state": self.state,
            "when": self.when.isoformat(),
            "attempt": self.attempt,
            "worker": self.worker,
            "started": started.isoformat() if started else None,
        }

    def __repr__(self) -> str:
        where = f", worker={self.worker!r}" if self.worker else ""
        return (
            f"SnapshotTask({self.function_name}, key={self.key!r}, state={self.state}, "
            f"when={self.when.isoformat()}, attempt={self.attempt}{where})"
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a shadow held when the snapshot was taken."""

    #: When the snapshot was taken (just before its first page was read).
    taken: datetime
    #: Tasks not running yet, soonest first: ``scheduled`` ones (in the queue) and
    #: ``queued`` ones (due, on the stream, waiting for a free worker).
    future: Sequence[SnapshotTask]
    #: Tasks a worker has received, longest running first.
    running: Sequence[SnapshotTask]
    #: The live workers, by name.
    workers: Sequence[WorkerInfo]

    @property
    def total_tasks(self) -> int:
        return len(self.future) + len(self.running)

    def count(self, state: State) -> int:
        """How many tasks are in ``state``."""
        if state == "running":
            return len(self.running)
        return sum(1 for task in self.future if task.state == state)

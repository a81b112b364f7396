"""Worker subprocesses (``python -m shadows worker``) that can be killed, stopped and
restarted, with a journal of every process's life for the verifier.

A worker that exits without being told to (a crash, or giving up on Redis) is a finding:
it is journaled as ``died`` and, as a supervisor would, started again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tasks import DIRECTORY_VARIABLE

#: The folder holding the ``chaos`` package (``scripts/``): workers import it from there.
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Slot:
    """One of the N worker positions; its process is replaced after each fault."""

    index: int
    process: asyncio.subprocess.Process | None = None
    name: str = ""
    generation: int = 0
    #: Set while the slot's worker is being stopped or restarted (not a fault target).
    busy: bool = False
    stopping: asyncio.Task[None] | None = field(default=None, repr=False)
    #: The worker's log, and where this process's lines start in it.
    log: Path | None = None
    log_offset: int = 0
    #: Its "started" line has been seen: it handles SIGTERM from now on.
    ready: bool = False

    def started(self) -> bool:
        """Whether the worker has logged that it runs (its signal handlers are in place;
        before that, SIGTERM just ends the Python process)."""
        if not self.ready and self.log is not None:
            with open(self.log, "rb") as file:
                file.seek(self.log_offset)
                self.ready = f"Worker {self.name} started on".encode() in file.read()
        return self.ready


class WorkerPool:
    """N worker processes of one shadow; every start and end goes to ``processes.jsonl``."""

    def __init__(
        self,
        directory: Path,
        url: str,
        shadow: str,
        size: int,
        arguments: list[str],
        sigterm_timeout: float,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.url = url
        self.shadow = shadow
        self.arguments = arguments
        self.sigterm_timeout = sigterm_timeout
        self.environment = environment or {}
        self.slots = [Slot(index) for index in range(size)]
        self.journal = directory / "processes.jsonl"
        #: Processes told to exit (signalled by the pool): their exit is no finding.
        self._told: set[int] = set()
        self._watchers: set[asyncio.Task[None]] = set()
        self._closing = False
        (directory / "logs").mkdir(parents=True, exist_ok=True)

    def _note(self, record: dict[str, Any]) -> None:
        with open(self.journal, "a") as file:
            file.write(json.dumps(record) + "\n")

    def _exited(
        self, slot: Slot, process: asyncio.subprocess.Process, how: str, sent: float
    ) -> None:
        self._note(
            {
                "event": "exit",
                "slot": slot.index,
                "name": slot.name,
                "pid": process.pid,
                "how": how,
                "sent": sent,
                "t": time.time(),
                "returncode": process.returncode,
            }
        )

    async def start(self, slot: Slot, fresh_name: bool = False, same_name: bool = False) -> None:
        """Start the slot's worker: under its stable name, a fresh one (``fresh_name``) or
        exactly the name of the worker it replaces (``same_name``, as a container that
        keeps its hostname and PID 1)."""
        slot.generation += 1
        if not (same_name and slot.name):
            slot.name = f"w{slot.index}-g{slot.generation}" if fresh_name else f"w{slot.index}"
        environment = dict(os.environ)
        environment.update(self.environment)
        environment[DIRECTORY_VARIABLE] = str(self.directory)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), environment.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        log = self.directory / "logs" / f"{slot.name}.log"
        with open(log, "ab") as output:
            output.write(f"---- starting {slot.name} at {time.time():.3f}\n".encode())
            output.flush()
            slot.log, slot.log_offset, slot.ready = log, output.tell(), False
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shadows", "worker",
                "--url", self.url,
                "--shadows", self.shadow,
                "--tasks", "chaos.tasks:tasks",
                "--name", slot.name,
                "--logging-format", "plain",
                *self.arguments,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                cwd=ROOT,
                env=environment,
            )  # fmt: skip
        slot.process = process
        self._note(
            {
                "event": "spawn",
                "slot": slot.index,
                "name": slot.name,
                "pid": process.pid,
                "fresh_name": fresh_name,
                "same_name": same_name,
                "t": time.time(),
            }
        )
        watcher = asyncio.create_task(self._watch(slot, process))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, slot: Slot, process: asyncio.subprocess.Process) -> None:
        """Notice a worker that exits on its own, and start it again under the same name
        (as a supervisor restarting a container would)."""
        await process.wait()
        if process.pid in self._told or self._closing:
            return
        self._exited(slot, process, "died", time.time())
        if slot.process is process and not slot.busy:
            slot.busy = True
            slot.stopping = asyncio.current_task()
            try:
                await self.start(slot, same_name=True)
            finally:
                slot.busy = False

    async def start_all(self) -> None:
        for slot in self.slots:
            await self.start(slot)

    def candidates(self, started: bool = False) -> list[Slot]:
        """Slots whose worker is running and not being stopped: fault targets (for SIGTERM,
        ``started``: only workers that have come up)."""
        return [
            s for s in self.slots
            if not s.busy and s.process is not None and s.process.returncode is None
            and (not started or s.started())
        ]  # fmt: skip

    async def wait_started(self, timeout: float = 60.0) -> None:
        """Wait until every running worker has come up (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [s for s in self.slots if s.process and s.process.returncode is None]
            if all(s.started() for s in running):
                return
            await asyncio.sleep(0.1)

    def _signal(self, process: asyncio.subprocess.Process, signum: signal.Signals) -> float:
        self._told.add(process.pid)
        sent = time.time()
        if process.returncode is None:
            process.send_signal(signum)
        return sent

    async def kill(self, slot: Slot, fresh_name: bool, same_name: bool = False) -> dict[str, Any]:
        """SIGKILL the slot's worker, wait until it is gone, start a new one (under the
        same name with ``same_name``)."""
        process = slot.process
        assert process is not None
        slot.busy = True
        try:
            sent = self._signal(process, signal.SIGKILL)
            await process.wait()
            self._exited(slot, process, "sigkill", sent)
            details = {"pid": process.pid, "name": slot.name}
            await self.start(slot, fresh_name, same_name)
            details["new_name"] = slot.name
            return details
        finally:
            slot.busy = False

    def terminate(self, slot: Slot, fresh_name: bool, restart: bool = True) -> dict[str, Any]:
        """SIGTERM the slot's worker; a background task waits for it and starts a new one."""
        process = slot.process
        assert process is not None
        slot.busy = True
        sent = self._signal(process, signal.SIGTERM)
        slot.stopping = asyncio.create_task(
            self._after_sigterm(slot, process, sent, fresh_name, restart)
        )
        return {"pid": process.pid, "name": slot.name}

    async def _after_sigterm(
        self,
        slot: Slot,
        process: asyncio.subprocess.Process,
        sent: float,
        fresh_name: bool,
        restart: bool,
    ) -> None:
        how = "sigterm"
        try:
            await asyncio.wait_for(process.wait(), self.sigterm_timeout)
        except TimeoutError:
            how = "sigterm-timeout"
            process.send_signal(signal.SIGKILL)
            await process.wait()
        self._exited(slot, process, how, sent)
        try:
            if restart:
                await self.start(slot, fresh_name)
        finally:
            slot.busy = False

    async def settle(self) -> None:
        """Wait for the stops and restarts still in progress."""
        while True:
            pending = [s.stopping for s in self.slots if s.stopping is not None]
            if not pending:
                return
            await asyncio.gather(*pending)
            for slot in self.slots:
                if slot.stopping is not None and slot.stopping.done():
                    slot.stopping = None

    async def stop_all(self) -> None:
        """SIGTERM every worker (no restart) and wait for all of them."""
        await self.settle()
        await self.wait_started()
        self._closing = True
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                self.terminate(slot, fresh_name=False, restart=False)
        await self.settle()

    async def kill_all(self) -> None:
        """Last resort when a run is aborted (or after :meth:`stop_all`: a no-op)."""
        self._closing = True
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                sent = self._signal(process, signal.SIGKILL)
                await process.wait()
                self._exited(slot, process, "abort", sent)
        for watcher in list(self._watchers):
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

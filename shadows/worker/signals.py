"""SIGTERM and SIGINT for a running worker: the first asks it to finish, the second to
cancel."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

logger = logging.getLogger("shadows.worker")


def install_signal_handlers(on_signal: Callable[[signal.Signals], None]) -> Callable[[], None]:
    """Route SIGTERM and SIGINT to ``on_signal`` on the running loop; returns the undo.

    Only in the main thread (the only one that may handle signals); elsewhere, nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    def restore() -> None:
        for signum in installed:
            loop.remove_signal_handler(signum)

    return restore


def graceful(
    stop: Callable[[bool], None], stopping: asyncio.Event
) -> Callable[[signal.Signals], None]:
    """The handler of a worker's signals: the first asks it to finish its running tasks
    (``stop()``), the next, once it is stopping, to cancel them (``stop(force=True)``)."""

    def on_signal(signum: signal.Signals) -> None:
        force = stopping.is_set()
        logger.warning(
            "%s received: %s",
            signum.name,
            "cancelling running tasks" if force else "finishing running tasks, then exiting",
        )
        stop(force)

    return on_signal

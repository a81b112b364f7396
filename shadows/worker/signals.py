"""SIGTERM and SIGINT for a running worker: the first asks it to finish, the second to
cancel."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable


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

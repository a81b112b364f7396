"""The task the worker processes of ``scaling.py`` run: nothing at all."""

from __future__ import annotations


async def noop() -> None:
    pass


tasks = [noop]

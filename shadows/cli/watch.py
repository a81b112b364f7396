"""``shadows cancel KEY`` and ``shadows watch KEY``: one execution, by its key."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from shadows.cli.app import app
from shadows.cli.errors import CLIError
from shadows.cli.options import Config, Name, Url
from shadows.cli.output import console, open_shadow, run
from shadows.core.state import ExecutionEvent, ExecutionState
from shadows.producer import executions
from shadows.producer.shadow import Shadow

Key = Annotated[str, typer.Argument(help="The key of the task.", show_default=False)]


@app.command()
def cancel(key: Key, shadows: Name = None, url: Url = None, config: Config = None) -> None:
    """Cancel the task KEY: remove it if it waits, or stop it on the worker running it
    (no retry or later run of it follows)."""
    shadow = open_shadow(shadows, url, config=config)
    done = run(_cancel(shadow, key))
    if done == executions.NOTHING:
        raise CLIError(f"Nothing to cancel: no task {key!r} waits or runs on {shadow.name}")
    if done == executions.REVOKED:
        print(f"Cancelling {key}: its worker stops it (state: cancelled once it has).")
    else:
        print(f"Cancelled {key}.")


async def _cancel(shadow: Shadow, key: str) -> int:
    async with shadow:
        return await executions.cancel(shadow, key)


@app.command()
def watch(
    key: Key,
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            envvar="SHADOW_JSON",
            help="Print each event as one line of JSON instead of a progress bar.",
        ),
    ] = False,
) -> None:
    """Follow the task KEY until it ends: its state and progress, live. Exits 0 when it
    completed, 1 when it failed or was cancelled."""
    shadow = open_shadow(shadows, url, config=config)
    final = run(_watch_json(shadow, key) if as_json else _watch_bar(shadow, key))
    if final is None:
        raise CLIError(f"No task {key!r} on shadow {shadow.name} (or it ended long ago)")
    if final is not ExecutionState.COMPLETED:
        raise typer.Exit(1)


async def _watch_json(shadow: Shadow, key: str) -> ExecutionState | None:
    final = None
    async with shadow:
        async for event in _events(shadow, key):
            sys.stdout.write(json.dumps(event.to_json(), ensure_ascii=False) + "\n")
            sys.stdout.flush()
            final = event.state
    return final


async def _watch_bar(shadow: Shadow, key: str) -> ExecutionState | None:
    final: ExecutionEvent | None = None
    out = console()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    async with shadow:
        with Progress(*columns, console=out, transient=False) as bar:
            task = bar.add_task(key, total=None, note="")
            async for event in _events(shadow, key):
                final = event
                progress = event.progress
                note = f"{event.state}" + (f" · {progress.message}" if progress.message else "")
                bar.update(task, completed=progress.current, total=progress.total, note=note)
    if final is None:
        return None
    line = f"{key}: {final.state}"
    if final.error:
        line += f" ({final.error})"
    out.print(line)
    return final.state


async def _events(shadow: Shadow, key: str) -> AsyncIterator[ExecutionEvent]:
    execution = await shadow.get_execution(key)
    if execution is None:
        return
    async for event in execution.subscribe():
        yield event

"""``shadows workers ls`` and ``shadows workers for-task NAME``: the live workers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from shadows.cli.app import app
from shadows.cli.options import Config, Name, Url
from shadows.cli.output import (
    Json,
    console,
    open_shadow,
    print_json,
    relative,
    run,
    show_group_help,
    span,
)
from shadows.operations.registry import WorkerInfo
from shadows.producer.shadow import Shadow

workers_app = typer.Typer(name="workers", rich_markup_mode=None)
app.add_typer(workers_app)


@workers_app.callback(invoke_without_command=True)
def _workers_group(context: typer.Context) -> None:
    """List the live workers of a shadow (those whose heartbeat has not lapsed)."""
    show_group_help(context)


@workers_app.command("ls")
def list_all(
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
    json_output: Json = False,
) -> None:
    """List every live worker with its tasks, concurrency and load."""
    shadow = open_shadow(shadows, url, config=config)
    found = run(_workers(shadow, None))
    _show(shadow, found, None, json_output)


@workers_app.command("for-task")
def for_task(
    task: Annotated[str, typer.Argument(help="The task name, e.g. trace.", show_default=False)],
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
    json_output: Json = False,
) -> None:
    """List the live workers that can run the task TASK."""
    shadow = open_shadow(shadows, url, config=config)
    found = run(_workers(shadow, task))
    _show(shadow, found, task, json_output)


async def _workers(shadow: Shadow, task: str | None) -> list[WorkerInfo]:
    async with shadow:
        return await (shadow.workers() if task is None else shadow.task_workers(task))


def workers_document(name: str, workers: Sequence[WorkerInfo], task: str | None) -> dict[str, Any]:
    """The ``--json`` form; ``task`` is present only for ``for-task``."""
    document: dict[str, Any] = {"shadow": name}
    if task is not None:
        document["task"] = task
    document["workers"] = [worker.to_dict() for worker in workers]
    return document


def _show(shadow: Shadow, found: list[WorkerInfo], task: str | None, json_output: bool) -> None:
    if json_output:
        print_json(workers_document(shadow.name, found, task))
        return
    out = console()
    if not found:
        what = f" can run {task!r}" if task else ""
        out.print(f"No live worker{what} on shadow {shadow.name}.")
        return
    what = f" that can run {task}" if task else ""
    title = f"{len(found)} live worker(s){what} on shadow {shadow.name}"
    out.print(worker_table(found, datetime.now(UTC), title=title))


def worker_table(workers: Sequence[WorkerInfo], now: datetime, title: str) -> Table:
    """The workers as a table (shared with ``shadows snapshot``)."""
    table = Table(title=title, title_justify="left")
    table.add_column("Worker", overflow="fold")
    table.add_column("Last seen", justify="right")
    table.add_column("Up for", justify="right")
    table.add_column("Running", justify="right")
    table.add_column("Tasks", overflow="fold")
    for worker in workers:
        table.add_row(
            worker.name,
            relative(worker.last_seen, now),
            span((now - worker.started).total_seconds()) if worker.started else "-",
            f"{worker.running}/{worker.concurrency}",
            ", ".join(sorted(worker.tasks)),
        )
    return table

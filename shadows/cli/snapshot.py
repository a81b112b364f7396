"""``shadows snapshot``: what a shadow holds right now, for people and for scripts."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from shadows.cli.app import app
from shadows.cli.options import CallTasks, Config, Name, Url
from shadows.cli.output import (
    Json,
    calls_shown,
    console,
    open_shadow,
    print_json,
    relative,
    run,
    span,
    timestamp,
)
from shadows.cli.workers import worker_table
from shadows.core.connection import redact_url
from shadows.operations.snapshot import Snapshot, SnapshotTask
from shadows.producer.shadow import Shadow

Limit = Annotated[
    int,
    typer.Option(
        "--limit",
        min=0,
        envvar="SHADOW_SNAPSHOT_LIMIT",
        help="List at most this many queued and scheduled tasks, soonest first (0: all). "
        "The counts always cover every task.",
    ),
]


@app.command()
def snapshot(
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
    limit: Limit = 100,
    json_output: Json = False,
    tasks: CallTasks = None,
) -> None:
    """Show the running, queued and scheduled tasks of a shadow, and its live workers.

    Tasks are shown by name, the cheap reading (no arguments). With --tasks, their
    arguments are read too, and the calls of the tasks of those collections are shown
    as the worker logs them (Logged arguments, the rest as ...).
    """
    shadow = open_shadow(shadows, url, tasks, config=config)
    calls = calls_shown()
    taken = run(_take(shadow, calls))
    if json_output:
        print_json(snapshot_document(shadow.name, taken, limit, calls))
    else:
        render_snapshot(console(), shadow, taken, limit, calls)


async def _take(shadow: Shadow, arguments: bool) -> Snapshot:
    async with shadow:
        return await shadow.snapshot(arguments=arguments)


def counts(taken: Snapshot) -> dict[str, int]:
    by_state = Counter(task.state for task in taken.future)
    return {
        "running": len(taken.running),
        "queued": by_state["queued"],
        "scheduled": by_state["scheduled"],
    }


def snapshot_document(
    name: str, taken: Snapshot, limit: int, calls: bool = False
) -> dict[str, Any]:
    """The ``--json`` form: stable keys; ``future`` holds the first ``limit`` tasks, each
    with its ``call`` too when ``calls``."""
    future = taken.future if limit == 0 else taken.future[:limit]

    def document(task: SnapshotTask) -> dict[str, Any]:
        return {**task.to_dict(), "call": task.call_repr()} if calls else task.to_dict()

    return {
        "shadow": name,
        "taken": taken.taken.isoformat(),
        "total_tasks": taken.total_tasks,
        "counts": counts(taken),
        "running": [document(task) for task in taken.running],
        "future": [document(task) for task in future],
        "workers": [worker.to_dict() for worker in taken.workers],
    }


def render_snapshot(
    out: Console, shadow: Shadow, taken: Snapshot, limit: int, calls: bool = False
) -> None:
    numbers = counts(taken)
    out.print(
        Text.assemble(
            ("Shadow ", "bold"),
            (shadow.name, "bold cyan"),
            f" on {redact_url(shadow.url)} at {timestamp(taken.taken)} UTC",
        )
    )
    out.print(
        f"{taken.total_tasks:,} task(s): {numbers['running']:,} running, "
        f"{numbers['queued']:,} queued, {numbers['scheduled']:,} scheduled"
    )
    out.print(_capacity(taken))
    now = taken.taken
    task_column = "Call" if calls else "Task"

    def shown(task: SnapshotTask) -> str:
        return task.call_repr() if calls else task.function_name

    if taken.running:
        out.print()
        table = Table(title=f"Running ({len(taken.running):,})", title_justify="left")
        table.add_column(task_column, overflow="fold")
        table.add_column("Key", overflow="fold")
        table.add_column("Attempt", justify="right")
        table.add_column("Worker", overflow="fold")
        table.add_column("Started (UTC)")
        table.add_column("Running for", justify="right")
        for task in taken.running:
            started = task.started
            table.add_row(
                shown(task),
                task.key,
                str(task.attempt),
                task.worker or "-",
                timestamp(started),
                span((now - started).total_seconds()) if started else "-",
            )
        out.print(table)

    if taken.future:
        out.print()
        listed = taken.future if limit == 0 else taken.future[:limit]
        title = f"Queued and scheduled ({len(taken.future):,}, soonest first)"
        table = Table(title=title, title_justify="left")
        table.add_column("Due (UTC)")
        table.add_column("Due", justify="right")
        table.add_column(task_column, overflow="fold")
        table.add_column("Key", overflow="fold")
        table.add_column("Attempt", justify="right")
        table.add_column("State")
        for task in listed:
            table.add_row(
                timestamp(task.when),
                relative(task.when, now),
                shown(task),
                task.key,
                str(task.attempt),
                task.state,
            )
        out.print(table)
        if len(listed) < len(taken.future):
            hidden = len(taken.future) - len(listed)
            out.print(f"... and {hidden:,} more (--limit 0 lists all)")
    if not taken.total_tasks:
        out.print("Nothing is scheduled, queued or running.")

    out.print()
    if taken.workers:
        out.print(worker_table(taken.workers, now, title=f"Workers ({len(taken.workers)})"))
    else:
        out.print("No live workers.")


def _capacity(taken: Snapshot) -> Group | str:
    """How full the live workers are: the progress of the shadow's work, at a glance."""
    slots = sum(worker.concurrency for worker in taken.workers)
    if not slots:
        return f"{len(taken.workers)} live worker(s)"
    busy = min(len(taken.running), slots)
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        f"{len(taken.workers)} live worker(s), {busy:,} of {slots:,} slots busy",
        ProgressBar(total=slots, completed=busy, width=30),
        f"{busy / slots:.0%}",
    )
    return Group(bar)

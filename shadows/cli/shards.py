"""``shadows shards``: the shard counts in use and what each shard holds; ``shadows shards
record N`` and ``shadows shards forget N`` for changing the count (see docs/scaling.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from shadows.behaviours.base import plan_for
from shadows.cli.app import app
from shadows.cli.errors import CLIError
from shadows.cli.options import Config, Name, Tasks, Url
from shadows.cli.output import Json, console, open_shadow, print_json, relative, run
from shadows.operations.shards import (
    ShardReport,
    ShardsBusy,
    forget_count,
    record,
    report,
)
from shadows.producer.shadow import Shadow

shards_app = typer.Typer(name="shards", rich_markup_mode=None)
app.add_typer(shards_app)

Count = Annotated[int, typer.Argument(help="A shard count, e.g. 3.", show_default=False, min=1)]


@shards_app.callback(invoke_without_command=True)
def _shards_group(
    context: typer.Context,
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
    json_output: Json = False,
) -> None:
    """Show the recorded shard counts and each shard's work: stream length, pending
    (held by workers), scheduled and failed (dead letters)."""
    if context.invoked_subcommand is not None:
        return
    shadow = open_shadow(shadows, url, config=config)
    found = run(_report(shadow))
    if json_output:
        print_json(shards_document(shadow, found))
        return
    out = console()
    now = datetime.now(UTC)
    counts = ", ".join(
        f"{n} (announced {relative(datetime.fromtimestamp(ms / 1000, UTC), now)})"
        for n, ms in sorted(found.counts.items())
    )
    out.print(f"Shard counts recorded on shadow {shadow.name}: {counts or 'none'}")
    table = Table(title=f"{len(found.shards)} shard(s)", title_justify="left")
    widest = max((len(work.prefix) for work in found.shards), default=0)
    for column in ("Shard", "Prefix", "Stream", "Pending", "Scheduled", "Failed"):
        if column == "Prefix":  # whole, to be copied into a SCAN or an ACL
            table.add_column(column, justify="left", no_wrap=True, min_width=widest)
        else:
            table.add_column(column, justify="right")
    for work in found.shards:
        table.add_row(
            str(work.shard),
            work.prefix,
            f"{work.stream:,}",
            f"{work.pending:,}",
            f"{work.scheduled:,}",
            f"{work.failed:,}",
        )
    out.print(table)


def shards_document(shadow: Shadow, found: ShardReport) -> dict[str, Any]:
    """The ``--json`` form."""
    return {
        "shadow": shadow.name,
        "counts": {str(n): ms for n, ms in sorted(found.counts.items())},
        "shards": [work.to_json() for work in found.shards],
    }


@shards_app.command("record")
def record_count(
    count: Count,
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
) -> None:
    """Record the shard count COUNT before starting processes with it: workers read its
    shards, and producers of other counts look for their keys there too."""
    shadow = open_shadow(shadows, url, config=config)
    counts = run(_record(shadow, count))
    listed = ", ".join(str(n) for n in sorted(counts))
    print(f"Recorded {count} shard(s) on shadow {shadow.name} (counts in use: {listed}).")


@shards_app.command("forget")
def forget(
    count: Count,
    shadows: Name = None,
    url: Url = None,
    tasks: Tasks = None,
    config: Config = None,
) -> None:
    """Forget the old shard count COUNT; refused while a process announced it lately,
    the shards only it reads still hold work, or tasks it added wait where the other
    counts would not look for their keys. --tasks names the task modules, so that
    tasks kept in the home shard (concurrency limits, flow control) are recognised."""
    shadow = open_shadow(shadows, url, tasks, config=config)
    try:
        run(_forget(shadow, count))
    except ShardsBusy as error:
        raise CLIError(f"cannot forget {count} shard(s): {error}") from None
    print(f"Forgot {count} shard(s) on shadow {shadow.name}.")


async def _report(shadow: Shadow) -> ShardReport:
    async with shadow:
        return await report(shadow)


async def _record(shadow: Shadow, count: int) -> dict[int, int]:
    async with shadow:
        return await record(shadow, count)


async def _forget(shadow: Shadow, count: int) -> None:
    def lives_home(function: str) -> bool:
        task = shadow.tasks.get(function)
        return task is not None and plan_for(task).needs_home

    async with shadow:
        await forget_count(shadow, count, lives_home)

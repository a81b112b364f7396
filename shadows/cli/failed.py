"""``shadows failed``: list, inspect, re-enqueue and purge dead-lettered tasks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

import typer
from redis.exceptions import ResponseError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shadows.cli.app import app
from shadows.cli.errors import CLIError
from shadows.cli.options import CallTasks, Config, Name, Url
from shadows.cli.output import Json, calls_shown, open_shadow, shadow_name, show_group_help
from shadows.cli.output import console as plain_console
from shadows.core.annotations import render_known_call
from shadows.core.execution import MessageError
from shadows.operations.dead_letters import DeadLetter
from shadows.producer.shadow import Shadow

failed_app = typer.Typer(name="failed", rich_markup_mode=None)
app.add_typer(failed_app)


@failed_app.callback(invoke_without_command=True)
def _failed_group(context: typer.Context) -> None:
    """Tasks that failed for good (dead letters): list, show, retry, purge."""
    show_group_help(context)


T = TypeVar("T")


def _with_shadow(
    url: str | None,
    name: str | None,
    action: Callable[[Shadow], Awaitable[T]],
    tasks: Sequence[str] | None = None,
    config: str | None = None,
) -> T:
    shadow = open_shadow(name, url, tasks, config=config)

    async def run() -> T:
        async with shadow:
            return await action(shadow)

    return asyncio.run(run())


def _call(shadow: Shadow, letter: DeadLetter) -> str:
    """The failed call as the worker logged it, when its task is registered."""
    function = shadow.tasks.get(letter.function)
    return render_known_call(
        letter.function, function, lambda: shadow.payloads.decode(letter.message())
    )


def _document(letter: DeadLetter, call: str | None, full: bool = False) -> dict[str, Any]:
    document: dict[str, Any] = {
        "key": letter.key,
        "function": letter.function,
        "attempt": letter.attempt,
        "failed_at": letter.failed_at.isoformat(),
        "reason": letter.reason,
        "error": letter.error,
        "worker": letter.worker,
    }
    if call is not None:
        document["call"] = call
    if full:
        document["traceback"] = letter.traceback
        document["fields"] = {
            name: value.decode(errors="replace") if name not in ("args", "kwargs") else None
            for name, value in letter.fields.items()
        }
    return document


@failed_app.command("ls")
def list_failed(
    url: Url = None,
    config: Config = None,
    shadows: Name = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", min=1, envvar="SHADOW_FAILED_LIMIT", help="Show at most this many."
        ),
    ] = 100,
    as_json: Json = False,
    tasks: CallTasks = None,
) -> None:
    """List dead-lettered tasks, newest first (with --tasks, their calls)."""

    async def listing(shadow: Shadow) -> list[tuple[DeadLetter, str | None]]:
        letters = await shadow.failed(limit)
        return [(letter, _call(shadow, letter) if calls_shown() else None) for letter in letters]

    found = _with_shadow(url, shadows, listing, tasks, config)
    if as_json:
        print(json.dumps([_document(letter, call) for letter, call in found], indent=2))
        return
    console = plain_console()  # calls and errors hold brackets that are not markup
    if not found:
        console.print(f"No failed tasks on shadow {shadow_name()!r}.")
        return
    table = Table(title=f"Failed tasks on {shadow_name()} ({len(found)})")
    for column in (
        "key",
        "call" if calls_shown() else "task",
        "attempt",
        "failed at",
        "reason",
        "error",
    ):
        table.add_column(column, overflow="fold")
    for letter, call in found:
        table.add_row(
            letter.key,
            call or letter.function,
            str(letter.attempt),
            letter.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            letter.reason,
            letter.error,
        )
    console.print(table)


@failed_app.command("show")
def show_failed(
    key: Annotated[str, typer.Argument(help="The task key.")],
    url: Url = None,
    config: Config = None,
    shadows: Name = None,
    as_json: Json = False,
    tasks: CallTasks = None,
) -> None:
    """Show one dead-lettered task with its error and traceback (with --tasks, its call)."""

    async def find(shadow: Shadow) -> tuple[DeadLetter | None, str | None]:
        letter = await shadow.failed_task(key)
        return letter, _call(shadow, letter) if letter is not None and calls_shown() else None

    letter, call = _with_shadow(url, shadows, find, tasks, config)
    if letter is None:
        raise CLIError(f"no failed task with key {key!r} on shadow {shadow_name()!r}")
    if as_json:
        print(json.dumps(_document(letter, call, full=True), indent=2))
        return
    console = Console()
    for name, value in _document(letter, call).items():
        console.print(f"[bold]{name}[/bold]: {escape(str(value))}", highlight=False)
    if letter.traceback:
        console.print("[bold]traceback[/bold]:")
        console.print(letter.traceback, highlight=False, markup=False)


def _key_or_all(key: str | None, every: bool) -> None:
    if (key is not None) != every:
        return
    raise CLIError("give a task key or --all (one of them)")


@failed_app.command("retry")
def retry_failed(
    key: Annotated[str | None, typer.Argument(help="The task key.")] = None,
    every: Annotated[
        bool, typer.Option("--all", envvar="SHADOW_FAILED_ALL", help="Retry every failed task.")
    ] = False,
    force_unverified: Annotated[
        bool,
        typer.Option(
            "--force-unverified",
            envvar="SHADOW_FAILED_FORCE_UNVERIFIED",
            help="With a signing key, also retry letters whose signature does not verify "
            "(refused as unsigned or forged, or written straight into Redis): they are "
            "signed anew, so check them first. Each one is logged.",
        ),
    ] = False,
    url: Url = None,
    config: Config = None,
    shadows: Name = None,
) -> None:
    """Enqueue a failed task (or all of them) again, now, from attempt 1.

    With a signing key (SHADOW_SIGNING_KEY), only letters whose signature verifies are
    retried, unless --force-unverified. With --all, a letter that cannot be retried is
    reported and the others are retried; the exit status is then 1.
    """
    _key_or_all(key, every)

    async def retry(shadow: Shadow) -> tuple[int, int]:
        if key is not None:
            keys = [key]
        else:
            keys = [letter.key for letter in await shadow.failed(shadow.dead_letter_limit)]
        refused = 0
        for name in keys:
            try:
                outcome = await shadow.retry_failed(name, force_unverified=force_unverified)
            except KeyError:
                problem = "no longer a failed task (retried, purged or expired meanwhile)"
                if key is not None:
                    problem = f"no failed task with key {name!r} on shadow {shadow.name!r}"
            except MessageError as error:
                problem = f"cannot retry a malformed message ({error})"
            except (ValueError, ResponseError) as error:  # codec, signature, refused by Redis
                problem = str(error)
            else:
                if outcome == "exists":
                    outcome = "not retried, a task with this key is already scheduled or running"
                print(f"{name}: {outcome}", flush=True)
                continue
            if key is not None:
                raise CLIError(problem)
            refused += 1
            print(f"{name}: not retried: {problem}", flush=True)
        return refused, len(keys)

    refused, total = _with_shadow(url, shadows, retry, config=config)
    if refused:
        raise CLIError(f"{refused} of {total} failed tasks could not be retried (see above)")


@failed_app.command("purge")
def purge_failed(
    key: Annotated[str | None, typer.Argument(help="The task key.")] = None,
    every: Annotated[
        bool, typer.Option("--all", envvar="SHADOW_FAILED_ALL", help="Purge every failed task.")
    ] = False,
    url: Url = None,
    config: Config = None,
    shadows: Name = None,
) -> None:
    """Forget a failed task (or all of them)."""
    _key_or_all(key, every)
    removed = _with_shadow(url, shadows, lambda shadow: shadow.purge_failed(key), config=config)
    if key is not None and not removed:
        raise CLIError(f"no failed task with key {key!r} on shadow {shadow_name()!r}")
    print(f"purged {removed} failed task(s)")

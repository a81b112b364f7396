"""The operator commands (snapshot, workers, tasks, clear) run as subprocesses against a
real Redis, and the generated CLI reference."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer

from conftest import _cleanup, wait_for
from processes import spawn_worker
from shadows import Shadow
from shadows.cli import app
from shadows.cli.reference import render
from shadows.core.connection import redact_url
from shadows.settings.sources import COMMAND_VARIABLES, CONFIG_VARIABLE, setting_variables
from test_cli import assert_one_line_error, shadows_cli, shadows_cli_in_process
from worker_tasks import pay, record_and_sleep

DOCS = Path(__file__).parent.parent / "docs"
WIDE = {"COLUMNS": "200"}


@pytest.fixture
async def shadow(redis_url: str, shadow_name: str) -> AsyncIterator[Shadow]:
    async with Shadow(name=shadow_name, url=redis_url) as opened:
        yield opened
        await _cleanup(opened)


def run(
    shadow: Shadow, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``shadows ARGS --url ... --shadows ...`` for the test's shadow (in-process)."""
    return shadows_cli_in_process(
        *args, "--url", shadow.url, "--shadows", shadow.name, env={**WIDE, **(env or {})}
    )


@pytest.fixture
def worker_process(shadow: Shadow, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``shadows worker`` subprocess named cli-worker, running one task at a time."""
    process = spawn_worker(
        shadow.url,
        shadow.name,
        "--name", "cli-worker",
        "--concurrency", "1",
        log=tmp_path / "worker.log",
    )  # fmt: skip
    yield process
    process.send_signal(signal.SIGKILL)
    process.wait(10)


async def listed(shadow: Shadow) -> bool:
    return [w.name for w in await shadow.workers()] == ["cli-worker"]


async def test_snapshot_shows_running_queued_and_scheduled_work(
    shadow: Shadow, worker_process: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    runs = str(tmp_path / "runs")
    await shadow.add(record_and_sleep, key="busy")(runs, "busy", 60)
    await shadow.add(record_and_sleep, key="next")(runs, "next", 0)
    later = datetime.now(UTC) + timedelta(hours=1)
    await shadow.add("trace", when=later, key="later")("hello")

    async def busy() -> bool:
        return await shadow.task_state("busy") == "running"

    await wait_for(busy, 30, "the worker to start the task")
    await wait_for(lambda: listed(shadow), 30, "the worker to be listed")

    result = run(shadow, "snapshot")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert f"Shadow {shadow.name} on {shadow.url}" in text
    assert "3 task(s): 1 running, 1 queued, 1 scheduled" in text
    assert "1 live worker(s), 1 of 1 slots busy" in text
    for fragment in ("Running (1)", "busy", "cli-worker", "record_and_sleep", "next", "later"):
        assert fragment in text
    assert text.index("next") < text.index("later")  # soonest first

    document = json.loads(run(shadow, "snapshot", "--json").stdout)
    assert document["shadow"] == shadow.name
    assert document["total_tasks"] == 3
    assert document["counts"] == {"running": 1, "queued": 1, "scheduled": 1}
    [running] = document["running"]
    assert (running["key"], running["worker"], running["state"]) == (
        "busy",
        "cli-worker",
        "running",
    )
    assert datetime.fromisoformat(running["started"]) <= datetime.fromisoformat(document["taken"])
    assert [task["key"] for task in document["future"]] == ["next", "later"]
    assert datetime.fromisoformat(document["future"][1]["when"]) == later.replace(
        microsecond=later.microsecond // 1000 * 1000
    )
    [worker] = document["workers"]
    assert worker["name"] == "cli-worker"
    assert worker["concurrency"] == 1
    assert "record_and_sleep" in worker["tasks"]

    limited = json.loads(run(shadow, "snapshot", "--json", "--limit", "1").stdout)
    assert [task["key"] for task in limited["future"]] == ["next"]
    assert limited["total_tasks"] == 3
    table = run(shadow, "snapshot", "--limit", "1").stdout
    assert "... and 1 more (--limit 0 lists all)" in table


async def test_snapshot_with_tasks_shows_their_calls_as_the_worker_logs_them(
    shadow: Shadow, tmp_path: Path
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    await shadow.add(pay, when=later, key="pay-1")("A-1", "4111 1111", ["book", "pen"])
    await shadow.add("trace", key="hello")("hello there")
    await shadow.add(record_and_sleep, when=later, key="other")(str(tmp_path), "x", 0)

    plain = run(shadow, "snapshot")
    assert plain.returncode == 0, plain.stderr
    assert "pay" in plain.stdout and "'A-1'" not in plain.stdout
    assert all("call" not in task for task in json_snapshot(shadow)["future"])

    shown = run(shadow, "snapshot", "--tasks", "worker_tasks:payments")
    assert shown.returncode == 0, shown.stderr
    assert "pay('A-1', ..., [len 2])" in shown.stdout
    assert "trace('hello there')" in shown.stdout  # the built-in tasks are always known
    assert "4111" not in shown.stdout

    calls = {
        task["key"]: task["call"]
        for task in json_snapshot(shadow, env={"SHADOW_TASKS": "worker_tasks:payments"})["future"]
    }
    # A task outside the collections keeps its bare name: nothing says what to show.
    assert calls == {
        "hello": "trace('hello there')",
        "pay-1": "pay('A-1', ..., [len 2])",
        "other": "record_and_sleep",
    }


def json_snapshot(shadow: Shadow, env: dict[str, str] | None = None) -> Any:
    result = run(shadow, "snapshot", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_workers_ls_and_for_task(
    shadow: Shadow, worker_process: subprocess.Popen[bytes]
) -> None:
    await wait_for(lambda: listed(shadow), 30, "the worker to be listed")

    result = run(shadow, "workers", "ls")
    assert result.returncode == 0, result.stderr
    assert "1 live worker(s) on shadow" in result.stdout
    assert "cli-worker" in result.stdout
    assert "record_and_sleep" in result.stdout
    assert "0/1" in result.stdout

    document = json.loads(run(shadow, "workers", "ls", "--json").stdout)
    assert document["shadow"] == shadow.name
    [worker] = document["workers"]
    assert set(worker) == {"name", "last_seen", "started", "concurrency", "running", "tasks"}
    assert worker["tasks"] == sorted(worker["tasks"])

    able = json.loads(run(shadow, "workers", "for-task", "record_and_sleep", "--json").stdout)
    assert able["task"] == "record_and_sleep"
    assert [w["name"] for w in able["workers"]] == ["cli-worker"]
    assert "cli-worker" in run(shadow, "workers", "for-task", "trace").stdout

    nobody = run(shadow, "workers", "for-task", "no_such_task")
    assert nobody.returncode == 0
    assert "No live worker can run 'no_such_task'" in nobody.stdout
    empty = json.loads(run(shadow, "workers", "for-task", "no_such_task", "--json").stdout)
    assert empty["workers"] == []


async def test_a_killed_worker_leaves_workers_ls_after_its_missed_heartbeats(
    shadow: Shadow, tmp_path: Path
) -> None:
    process = spawn_worker(
        shadow.url,
        shadow.name,
        "--name", "cli-worker",
        "--heartbeat-interval", "300ms",
        log=tmp_path / "worker.log",
        env={"SHADOW_WORKER_MISSED_HEARTBEATS": "2"},
    )  # fmt: skip
    try:
        await wait_for(lambda: listed(shadow), 30, "the worker to be listed")
        [worker] = json.loads(run(shadow, "workers", "ls", "--json").stdout)["workers"]
        assert worker["name"] == "cli-worker"
        # Its entry lasts two intervals of 300 ms, not the default three.
        assert 0 < await shadow.client.pttl(shadow.keys.worker("cli-worker")) <= 600
        process.send_signal(signal.SIGKILL)
        process.wait(10)

        async def gone() -> bool:
            return await shadow.workers() == []

        await wait_for(gone, 10, "the killed worker to drop out")
        assert json.loads(run(shadow, "workers", "ls", "--json").stdout)["workers"] == []
    finally:
        process.kill()
        process.wait(10)


async def test_empty_shadows_and_no_workers(shadow: Shadow) -> None:
    result = run(shadow, "snapshot")
    assert result.returncode == 0, result.stderr
    assert "Nothing is scheduled, queued or running." in result.stdout
    assert "No live workers." in result.stdout
    assert "No live worker on shadow" in run(shadow, "workers", "ls").stdout
    assert json.loads(run(shadow, "workers", "ls", "--json").stdout)["workers"] == []


def test_snapshot_on_memory_works() -> None:
    result = shadows_cli("snapshot", "--url", "memory://", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_tasks"] == 0


async def test_tasks_commands_schedule_the_builtin_tasks(shadow: Shadow) -> None:
    traced = run(shadow, "tasks", "trace", "hello there")
    assert traced.returncode == 0, traced.stderr
    assert "Added trace('hello there') to shadow" in traced.stdout
    assert "queued, due now" in traced.stdout

    napped = run(shadow, "tasks", "sleep", "500ms", "--in", "1m", "--key", "nap")
    assert napped.returncode == 0, napped.stderr
    assert "Added sleep(0.5)" in napped.stdout
    assert "[key=nap, scheduled in 1m 00s]" in napped.stdout

    doomed = run(shadow, "tasks", "fail", "boom", "--when", "2030-01-01T09:00:00+02:00")
    assert doomed.returncode == 0, doomed.stderr

    again = run(shadow, "tasks", "sleep", "1", "--key", "nap")
    assert again.returncode == 0
    assert "Not added: a task with key 'nap' is already scheduled" in again.stdout

    snapshot = await shadow.snapshot(arguments=True)
    by_function = {task.function_name: task for task in snapshot.future}
    assert set(by_function) == {"trace", "sleep", "fail"}
    assert by_function["trace"].state == "queued"
    assert by_function["trace"].args == ("hello there",)
    nap = by_function["sleep"]
    assert (nap.key, nap.state, nap.args) == ("nap", "scheduled", (0.5,))
    in_a_minute = datetime.now(UTC) + timedelta(minutes=1)
    assert in_a_minute - timedelta(seconds=30) < nap.when <= in_a_minute
    assert by_function["fail"].when == datetime(2030, 1, 1, 7, 0, tzinfo=UTC)
    assert by_function["fail"].args == ("boom",)


async def test_scheduled_builtin_tasks_run_on_a_worker(shadow: Shadow, tmp_path: Path) -> None:
    assert run(shadow, "tasks", "trace", "hello from the command line").returncode == 0
    assert run(shadow, "tasks", "fail", "on purpose").returncode == 0
    assert run(shadow, "tasks", "sleep", "10ms").returncode == 0
    log = tmp_path / "worker.log"
    worker = spawn_worker(shadow.url, shadow.name, "--until-finished", log=log)
    assert worker.wait(60) == 0, log.read_text()
    text = log.read_text()
    assert "trace: hello from the command line" in text
    assert "RuntimeError: on purpose" in text
    assert "✔ sleep(0.01)" in text


async def test_clear_asks_for_confirmation_then_removes_queued_work(shadow: Shadow) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    for i in range(3):
        await shadow.add("trace", when=later)(str(i))
    await shadow.add("trace")("now")

    refused = run(shadow, "clear")
    assert_one_line_error(refused, "--yes")
    assert (await shadow.snapshot()).total_tasks == 4

    cleared = run(shadow, "clear", "--yes")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.strip() == f"Cleared 4 task(s) from shadow {shadow.name}."
    assert (await shadow.snapshot()).total_tasks == 0

    await shadow.add("trace")("again")
    by_environment = run(shadow, "clear", env={"SHADOW_CLEAR_YES": "1"})
    assert by_environment.stdout.strip() == f"Cleared 1 task(s) from shadow {shadow.name}."


async def test_options_read_their_environment_variables(shadow: Shadow) -> None:
    base = {"SHADOW_URL": shadow.url, "SHADOW_NAME": shadow.name}
    added = shadows_cli_in_process(
        "tasks", "trace", "from env",
        env={**base, "SHADOW_TASK_KEY": "env-key", "SHADOW_TASK_IN": "10m"},
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "[key=env-key, scheduled in 10m 00s]" in added.stdout
    when = shadows_cli_in_process(
        "tasks", "sleep", "1",
        env={**base, "SHADOW_TASK_KEY": "env-when", "SHADOW_TASK_WHEN": "2031-02-03T04:05Z"},
    )  # fmt: skip
    assert when.returncode == 0, when.stderr
    await shadow.add("trace")("now")

    document = json.loads(
        shadows_cli_in_process(
            "snapshot", env={**base, "SHADOW_JSON": "1", "SHADOW_SNAPSHOT_LIMIT": "1"}
        ).stdout
    )
    assert document["shadow"] == shadow.name
    assert document["total_tasks"] == 3
    assert len(document["future"]) == 1
    snapshot = await shadow.snapshot()
    assert [t.key for t in snapshot.future][1:] == ["env-key", "env-when"]
    assert snapshot.future[2].when == datetime(2031, 2, 3, 4, 5, tzinfo=UTC)

    workers = json.loads(
        shadows_cli_in_process("workers", "ls", env={**base, "SHADOW_JSON": "true"}).stdout
    )
    assert workers == {"shadow": shadow.name, "workers": []}


async def test_tasks_are_sealed_with_the_codec_and_key_of_the_environment(
    shadow: Shadow,
) -> None:
    env = {"SHADOW_CODEC": "json", "SHADOW_SIGNING_KEY": "s3cret", "SHADOW_TASK_KEY": "sealed"}
    assert run(shadow, "tasks", "trace", "signed", env=env).returncode == 0
    async with Shadow(shadow.name, shadow.url, codec="json", signing_key="s3cret") as reader:
        [task] = (await reader.snapshot(arguments=True)).future
        assert (task.key, task.args) == ("sealed", ("signed",))


#: The commands this module covers (``failed`` has its own tests).
OPERATOR_COMMANDS = {
    "clear",
    "failed",
    "shards",
    "restore",
    "snapshot",
    "strike",
    "strikes",
    "tasks",
    "version",
    "worker",
    "workers",
}


def _commands() -> list[tuple[list[str], Any]]:
    found: list[tuple[list[str], Any]] = []

    def walk(path: list[str], command: Any) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk([*path, name], sub)
        else:
            found.append((path, command))

    walk([], typer.main.get_command(app))
    return [(path, command) for path, command in found if path[0] in OPERATOR_COMMANDS]


@pytest.mark.parametrize(
    ("path", "command"), [pytest.param(p, c, id=" ".join(p)) for p, c in _commands()]
)
def test_every_option_has_an_environment_variable_named_in_its_help(
    path: list[str], command: Any
) -> None:
    options = [p for p in command.params if p.param_type_name == "option"]
    result = shadows_cli_in_process(*path, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    settings = set(setting_variables()) | {CONFIG_VARIABLE}
    for option in options:
        if isinstance(option.envvar, str):  # a command's own switch, read by typer
            assert option.envvar in COMMAND_VARIABLES, option.opts
            assert option.envvar in text
        else:  # a setting: its variable is read by the settings model
            variable = (option.help or "").split("[env: ")[1].split(";")[0].rstrip("]")
            assert variable in settings, option.opts
            assert variable in text


def test_the_command_switch_variables_are_known_to_the_settings() -> None:
    """Variables that typer reads are not reported as unknown settings, and no more."""
    switches = {
        option.envvar
        for path, command in _all_commands()
        for option in command.params
        if isinstance(getattr(option, "envvar", None), str)
        # the dashboard (its own settings model) reads the logging variables through typer
        and not (path == ["dashboard"] and option.envvar in setting_variables())
    }
    assert switches == COMMAND_VARIABLES


def _all_commands() -> list[tuple[list[str], Any]]:
    found: list[tuple[list[str], Any]] = []

    def walk(path: list[str], command: Any) -> None:
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk([*path, name], sub)
        if not getattr(command, "commands", None):
            found.append((path, command))

    walk([], typer.main.get_command(app))
    return found


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (["snapshot", "--url", "http://example.com"], {}, ["Invalid shadow URL", "scheme"]),
        (["snapshot", "--url", "redis://127.0.0.1:1/0"], {}, ["cannot reach Redis"]),
        (["workers", "ls", "--url", "redis://127.0.0.1:1/0"], {}, ["cannot reach Redis"]),
        (["clear", "--yes", "--url", "redis://127.0.0.1:1/0"], {}, ["cannot reach Redis"]),
        (["tasks", "trace", "x", "--url", "redis://127.0.0.1:1/0"], {}, ["cannot reach Redis"]),
        (["snapshot", "--shadows", "has space"], {}, ["Invalid shadow name"]),
        (["snapshot", "--limit", "-1"], {}, ["--limit"]),
        (["snapshot", "--tasks", "nocolon"], {}, ["cannot import tasks entry 'nocolon'"]),
        (["snapshot"], {"SHADOW_TASKS": "no_such_module_anywhere:tasks"}, ["Cannot import"]),
        (["failed", "ls", "--tasks", "worker_tasks:nothing"], {}, ["has no attribute"]),
        (["failed", "show", "k", "--tasks", "nocolon"], {}, ["cannot import tasks entry"]),
        (["snapshot"], {"SHADOW_SNAPSHOT_LIMIT": "lots"}, ["--limit", "SHADOW_SNAPSHOT_LIMIT"]),
        (["workers", "for-task"], {}, ["Missing argument"]),
        (["tasks", "trace"], {}, ["Missing argument"]),
        (["tasks", "sleep", "soon"], {}, ["invalid duration 'soon'"]),
        (["tasks", "trace", "x", "--in", "forever"], {}, ["--in", "invalid duration"]),
        (["tasks", "trace", "x", "--when", "tomorrow"], {}, ["--when", "invalid time"]),
        (["tasks", "trace", "x", "--when", "2030-01-01T09:00"], {}, ["has no time zone"]),
        (["tasks", "trace", "x", "--when", "2030-01-01T09:00Z", "--in", "5s"], {}, ["not both"]),
        (["tasks", "trace", "x", "--key", ""], {}, ["--key must not be empty"]),
        (["tasks", "frobnicate"], {}, ["No such command"]),
        (["clear", "--url", "memory://"], {}, ["confirm with --yes"]),
    ],
)
def test_bad_input_is_one_clear_line(
    args: list[str], env: dict[str, str], fragments: list[str]
) -> None:
    assert_one_line_error(shadows_cli_in_process(*args, env=env), *fragments)


@pytest.mark.parametrize("group", ["workers", "tasks"])
def test_a_group_without_a_command_prints_its_help(group: str) -> None:
    result = shadows_cli_in_process(group)
    assert result.returncode == 0
    assert f"Usage: shadows {group} [OPTIONS] COMMAND [ARGS]..." in result.stdout


def test_urls_shown_to_people_hide_passwords() -> None:
    assert redact_url("redis://:hunter2@cache:6380/1") == "redis://:***@cache:6380/1"
    assert redact_url("rediss://app:hunter2@cache/0") == "rediss://app:***@cache/0"
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_the_cli_reference_is_up_to_date() -> None:
    committed = (DOCS / "cli.md").read_text()
    assert render() == committed, (
        "docs/cli.md is out of date: run `python -m shadows.cli.reference > docs/cli.md`"
    )


def test_the_cli_reference_generator_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shadows.cli.reference"], capture_output=True, text=True, check=True
    )
    assert result.stdout == (DOCS / "cli.md").read_text()

"""The ``shadows`` command, run as a subprocess (and, where only its output is checked,
in-process: see :func:`shadows_cli_in_process`)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shadows import Shadow, __version__
from worker_tasks import read_records, record_and_sleep

TESTS = Path(__file__).parent


def shadows_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SHADOW_")}
    environment["PYTHONPATH"] = str(TESTS)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "shadows", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=TESTS,
        timeout=timeout,
    )


LoggerState = tuple[logging.Logger, int, list[logging.Handler], bool, bool]


def _logging_state() -> list[LoggerState]:
    loggers = [logging.getLogger()] + [
        found
        for found in logging.root.manager.loggerDict.values()
        if isinstance(found, logging.Logger)
    ]
    return [(lg, lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers]


def _restore_logging(saved: list[LoggerState]) -> None:
    """Every logger as it was (a command may quiet one for its process: ``config`` sets
    ``shadows`` to ERROR); loggers first made by the command are left at their defaults."""
    known = set()
    for logger, level, handlers, propagate, disabled in saved:
        known.add(id(logger))
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate, logger.disabled = propagate, disabled
    for logger, *_ in _logging_state():
        if id(logger) not in known:
            logger.setLevel(logging.NOTSET)
            logger.handlers[:] = []
            logger.propagate, logger.disabled = True, False


def shadows_cli_in_process(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: Path = TESTS,
    environment: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``shadows ARGS`` through :func:`shadows.cli.main` in this process, with the
    environment, directory and captured output that :func:`shadows_cli` gives a subprocess.

    For tests of what a command prints and returns, where the process is not what is
    tested: each subprocess costs a Python start and the import of shadows (about a second
    of CPU). ``python -m shadows`` itself, signals and worker processes keep their
    subprocess tests. The command runs on a thread of its own (it calls ``asyncio.run``,
    and async tests call this from their loop, which waits as it would on a subprocess);
    the root logger starts bare, as in a new process, and what the command changes in
    logging is undone afterwards (the worker command replaces the root's handlers,
    ``config`` quiets ``shadows``). ``cwd`` is on
    ``sys.path`` as for ``python -m``; the modules imported from it (a project's tasks) are
    forgotten afterwards, so the next project's modules of the same name are imported
    afresh. ``environment`` replaces the default one (this one's, without SHADOW_*)."""
    from shadows.cli import main

    if environment is None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SHADOW_")}
        environment["PYTHONPATH"] = str(TESTS)
    environment = {**environment, **(env or {})}
    out, err = io.StringIO(), io.StringIO()
    outcome: list[BaseException | None] = []

    def command() -> None:
        try:
            main(list(args))
        except BaseException as ended:  # SystemExit carries the status
            outcome.append(ended)

    saved_environ, saved_cwd, saved_path = dict(os.environ), os.getcwd(), list(sys.path)
    modules_before = set(sys.modules)
    root = logging.getLogger()
    saved_logging = _logging_state()
    try:
        os.environ.clear()
        os.environ.update(environment)
        os.chdir(cwd)
        sys.path.insert(0, str(cwd))
        # As in a new process: no handlers (warnings reach stderr through logging's last
        # resort, which writes to the redirected sys.stderr), level WARNING.
        root.handlers[:] = []
        root.setLevel(logging.WARNING)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            thread = threading.Thread(target=command, name="shadows-cli", daemon=True)
            thread.start()
            thread.join(timeout)
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        for name in set(sys.modules) - modules_before:
            where = getattr(sys.modules[name], "__file__", None) or ""
            if cwd != TESTS and where.startswith(str(cwd)):
                del sys.modules[name]
        _restore_logging(saved_logging)
    if thread.is_alive():
        raise subprocess.TimeoutExpired(["shadows", *args], timeout, out.getvalue())
    ended = outcome[0] if outcome else None
    if ended is not None and not isinstance(ended, SystemExit):
        raise ended
    status = ended.code if isinstance(ended, SystemExit) else 0
    code = status if isinstance(status, int) else (0 if status is None else 1)
    return subprocess.CompletedProcess(
        ["shadows", *args], code, stdout=out.getvalue(), stderr=err.getvalue()
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_version() -> None:
    result = shadows_cli("version")
    assert result.returncode == 0
    assert result.stdout.strip() == __version__


def test_no_arguments_prints_help() -> None:
    result = shadows_cli()
    assert result.returncode == 0
    assert "worker" in result.stdout


def test_worker_help_names_every_environment_variable() -> None:
    result = shadows_cli("worker", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for variable in (
        "SHADOW_TASKS",
        "SHADOW_NAME",
        "SHADOW_URL",
        "SHADOW_WORKER_NAME",
        "SHADOW_WORKER_CONCURRENCY",
        "SHADOW_WORKER_REDELIVERY_TIMEOUT",
        "SHADOW_WORKER_RECONNECTION_DELAY",
        "SHADOW_WORKER_MINIMUM_CHECK_INTERVAL",
        "SHADOW_WORKER_SCHEDULING_RESOLUTION",
        "SHADOW_WORKER_SCHEDULE_AUTOMATIC_TASKS",
        "SHADOW_LOGGING_LEVEL",
        "SHADOW_LOGGING_FORMAT",
    ):
        assert variable in text


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (["--redelivery-timeout", "5 parsecs"], {}, ["--redelivery-timeout", "invalid duration"]),
        ([], {"SHADOW_WORKER_REDELIVERY_TIMEOUT": "soon"}, ["invalid duration 'soon'"]),
        (["--concurrency", "0"], {}, ["--concurrency: 0: Input should be greater than 0"]),
        (["--missed-heartbeats", "0"], {}, ["--missed-heartbeats"]),
        ([], {"SHADOW_WORKER_MISSED_HEARTBEATS": "many"}, ["SHADOW_WORKER_MISSED_HEARTBEATS"]),
        (["--heartbeat-interval", "0"], {}, ["heartbeat_interval must be a positive"]),
        (["--url", "http://example.com"], {}, ["Invalid shadow URL", "scheme"]),
        (["--url", "redis://host:port"], {}, ["Invalid shadow URL"]),
        (["--tasks", "no_such_module_anywhere:tasks"], {}, ["Cannot import task module"]),
        (["--tasks", "no_such_module_anywhere"], {}, ["cannot import tasks entry"]),
        (["--logging-format", "xml"], {}, ["--logging-format", "'rich', 'plain' or 'json'"]),
        (["--logging-level", "LOUD"], {}, ["--logging-level", "'LOUD'", "'DEBUG'"]),
        (["--shadows", "has space"], {}, ["Invalid shadow name"]),
    ],
)
def test_bad_input_is_one_clear_line(
    args: list[str], env: dict[str, str], fragments: list[str]
) -> None:
    result = shadows_cli_in_process("worker", "--tasks", "worker_tasks:tasks", *args, env=env)
    assert_one_line_error(result, *fragments)
    assert result.returncode == 2  # a configuration mistake


def test_unknown_command_is_one_clear_line() -> None:
    assert_one_line_error(shadows_cli("frobnicate"), "No such command")


async def test_worker_takes_every_setting_from_the_environment(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        for i in range(3):
            await shadow.add(record_and_sleep)(str(runs), f"t{i}", 0)
    result = shadows_cli(
        "worker",
        env={
            "SHADOW_URL": redis_url,
            "SHADOW_NAME": shadow_name,
            "SHADOW_TASKS": "worker_tasks:tasks,shadows.tasks:standard_tasks",
            "SHADOW_WORKER_NAME": "env-worker",
            "SHADOW_WORKER_CONCURRENCY": "3",
            "SHADOW_WORKER_REDELIVERY_TIMEOUT": "2m",
            "SHADOW_WORKER_UNTIL_FINISHED": "1",
            "SHADOW_LOGGING_FORMAT": "json",
            "SHADOW_LOGGING_LEVEL": "INFO",
        },
    )
    assert result.returncode == 0, result.stderr
    assert len([r for r in read_records(runs) if r[0] == "end"]) == 3
    assert '"message": "Worker env-worker started on shadow ' + shadow_name in result.stderr
    assert "(concurrency 3," in result.stderr
    assert '"task": "record_and_sleep"' in result.stderr
    assert '"outcome": "completed"' in result.stderr


async def test_worker_with_plain_logs_runs_until_finished(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        await shadow.add(record_and_sleep, key="plain-1")(str(runs), "plain", 0)
    result = shadows_cli(
        "worker",
        "--url", redis_url,
        "--shadows", shadow_name,
        "--tasks", "worker_tasks:tasks",
        "--concurrency", "2",
        "--redelivery-timeout", "30s",
        "--reconnection-delay", "500ms",
        "--minimum-check-interval", "100ms",
        "--scheduling-resolution", "100ms",
        "--no-schedule-automatic-tasks",
        "--until-finished",
        "--logging-format", "plain",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "▶ record_and_sleep(..., ..., ...) [key=plain-1 attempt=1]" in result.stderr
    assert "✔ record_and_sleep(..., ..., ...) [key=plain-1 attempt=1] completed in" in result.stderr


def test_worker_on_memory_runs_until_finished() -> None:
    result = shadows_cli(
        "worker",
        "--url",
        "memory://",
        "--tasks",
        "shadows.tasks:standard_tasks",
        "--until-finished",
    )
    assert result.returncode == 0, result.stderr
    assert "stopped" in result.stderr


async def test_worker_takes_the_shard_count_from_its_flag(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    async with Shadow(name=shadow_name, url=redis_url, shards=3) as producer:
        keys = [f"sharded-{n}" for n in range(6)]
        for key in keys:
            await producer.add(record_and_sleep, key=key)(str(runs), key, 0)
        await producer.client.delete(producer.keys.layout)  # only the worker's flag says 3
    result = shadows_cli(
        "worker",
        "--url", redis_url,
        "--shadows", shadow_name,
        "--shards", "3",
        "--tasks", "worker_tasks:tasks",
        "--no-schedule-automatic-tasks",
        "--until-finished",
        "--logging-format", "plain",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for key in keys:
        assert f"[key={key} attempt=1] completed in" in result.stderr
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        assert b"3" in await shadow.client.hkeys(shadow.keys.layout)


def test_worker_refuses_a_shard_count_below_one() -> None:
    result = shadows_cli("worker", "--url", "memory://", "--shards", "0", "--until-finished")
    assert result.returncode == 2
    assert "--shards" in result.stderr and "greater than 0" in result.stderr

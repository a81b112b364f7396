"""A declarative project from the outside: ``shadows.toml`` (or only ``SHADOW_*``
variables), ``shadows worker`` with no arguments, ``shadows config show|check`` and
``shadows init``, each run as a subprocess in the project's folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from test_cli import shadows_cli_in_process

TASKS = """
from datetime import timedelta
from pathlib import Path
from shadows import Retry, Shadow, Timeout

shadow = Shadow()

@shadow.task(retry=Retry(attempts=3), key="welcome-{customer_id}",
             timeout=Timeout(timedelta(seconds=30)))
async def send_welcome_email(customer_id: int, name: str, log: str) -> None:
    with open(log, "a") as file:
        file.write(f"welcome {customer_id} {name}\\n")
"""

BILLING = """
from shadows import Shadow

shadow = Shadow()  # another module's shadow: merged with the first by name and URL

@shadow.task
def charge(log: str, amount: int) -> None:
    with open(log, "a") as file:
        file.write(f"charge {amount}\\n")
"""

PRODUCER = """
import asyncio, sys
from myapp.tasks import send_welcome_email
from myapp.billing.charges import charge

async def main() -> None:
    log = sys.argv[1]
    await send_welcome_email.schedule(1, "Ann", log)
    await send_welcome_email.schedule(1, "Ann again", log)  # same key: ignored
    await charge.schedule(log, 42)

asyncio.run(main())
"""


def write(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with a package of tasks (``myapp``, ``myapp.billing`` a subpackage)."""
    write(tmp_path, "myapp/__init__.py", "")
    write(tmp_path, "myapp/tasks.py", TASKS)
    write(tmp_path, "myapp/billing/__init__.py", "")
    write(tmp_path, "myapp/billing/charges.py", BILLING)
    write(tmp_path, "produce.py", PRODUCER)
    return tmp_path


#: Commands that only read the settings and print: run in-process (see
#: ``test_cli.shadows_cli_in_process``); the worker and the scripts run as processes.
IN_PROCESS = {"config", "init", "snapshot"}


def run(
    folder: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``args`` in ``folder``: ``shadows ...``, or a Python script; no PYTHONPATH, no
    SHADOW_* variables but ``env``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SHADOW_", "PYTHON"))}
    environment.update(env or {})
    if args[0] in IN_PROCESS:
        return shadows_cli_in_process(*args, cwd=folder, environment=environment, timeout=timeout)
    command = (
        [sys.executable, *args]
        if args[0].endswith(".py")
        else [sys.executable, "-m", "shadows", *args]
    )
    return subprocess.run(
        command, capture_output=True, text=True, cwd=folder, env=environment, timeout=timeout
    )


def config(project: Path, url: str, name: str, extra: str = "") -> None:
    write(
        project,
        "shadows.toml",
        f"""
        name = "{name}"
        url = "{url}"
        tasks = ["myapp"]

        [worker]
        concurrency = 4
        until_finished = true
        minimum_check_interval = "50ms"

        [logging]
        format = "plain"
        {extra}
        """,
    )


def lines(log: Path) -> list[str]:
    return sorted(log.read_text().splitlines()) if log.exists() else []


def test_a_producer_and_a_worker_share_only_the_config_file(
    project: Path, redis_url: str, shadow_name: str
) -> None:
    config(project, redis_url, shadow_name)
    log = project / "runs.log"
    produced = run(project, "produce.py", str(log))
    assert produced.returncode == 0, produced.stderr
    result = run(project, "worker")
    assert result.returncode == 0, result.stderr
    assert lines(log) == ["charge 42", "welcome 1 Ann"]
    assert f"Settings from {project / 'shadows.toml'}" in result.stderr
    assert "task modules: myapp, myapp.billing, myapp.billing.charges, myapp.tasks" in result.stderr
    assert "tasks: charge, send_welcome_email" in result.stderr
    assert f"started on shadow {shadow_name} (concurrency 4," in result.stderr


def test_the_same_with_only_environment_variables(
    project: Path, redis_url: str, shadow_name: str
) -> None:
    env = {
        "SHADOW_URL": redis_url,
        "SHADOW_NAME": shadow_name,
        "SHADOW_TASKS": "myapp.tasks,myapp.billing",
        "SHADOW_WORKER_UNTIL_FINISHED": "true",
        "SHADOW_LOGGING_FORMAT": "plain",
    }
    log = project / "runs.log"
    assert run(project, "produce.py", str(log), env=env).returncode == 0
    result = run(project, "worker", env=env)
    assert result.returncode == 0, result.stderr
    assert lines(log) == ["charge 42", "welcome 1 Ann"]
    assert "Settings from the environment and defaults (no config file)" in result.stderr


def test_flags_win_over_variables_and_the_file(
    project: Path, redis_url: str, shadow_name: str
) -> None:
    config(project, "redis://127.0.0.1:1/0", "not-this-one")
    env = {"SHADOW_NAME": "nor-this-one", "SHADOW_URL": redis_url}
    result = run(project, "worker", "--shadows", shadow_name, "--concurrency", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert f"started on shadow {shadow_name} (concurrency 2," in result.stderr


def test_config_show_gives_every_value_and_its_source(project: Path) -> None:
    config(
        project,
        "redis://user:hunter2@localhost:6379/0",
        "emails",
        extra='[task.send_welcome_email]\nretry = { attempts = 8, delay = "30s" }\n',
    )
    env = {"SHADOW_WORKER_REDELIVERY_TIMEOUT": "2m", "SHADOW_SIGNING_KEY": "s3cret"}
    result = run(project, "config", "show", "--json", "--tasks", "myapp", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["name"] == {"value": "emails", "source": "file"}
    assert shown["url"] == {"value": "redis://user:***@localhost:6379/0", "source": "file"}
    assert shown["signing_key"] == {"value": "***", "source": "env"}
    assert shown["tasks"] == {"value": ["myapp"], "source": "flag"}
    assert shown["worker.concurrency"] == {"value": 4, "source": "file"}
    assert shown["worker.redelivery_timeout"] == {"value": "2m", "source": "env"}
    assert shown["worker.max_deliveries"] == {"value": 5, "source": "default"}
    assert shown["task.send_welcome_email.retry"] == {
        "value": {"attempts": 8, "delay": "30s"},
        "source": "file",
    }
    assert shown["task.send_welcome_email.timeout"] == {"value": "30s", "source": "decorator"}
    assert "hunter2" not in result.stdout and "s3cret" not in result.stdout
    text = run(project, "config", "show", env=env)
    assert text.returncode == 0 and "worker.redelivery_timeout" in text.stdout
    assert "2m  (env)" in text.stdout


def test_config_check_lists_the_tasks_with_their_options(project: Path) -> None:
    config(project, "memory://", "emails", extra='[task.charge]\ntimeout = "2m"\n')
    result = run(project, "config", "check")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "2 task(s):" in out
    assert "charge: timeout=2m (file)" in out
    assert "send_welcome_email: retry={attempts = 3, delay = 0s} (decorator)" in out
    assert "Configuration OK" in out


@pytest.mark.parametrize(
    ("extra", "env", "fragments"),
    [
        (
            '[task.send_welcom_email]\ntimeout = "2m"\n',
            {},
            ["[task.send_welcom_email] names no registered task", "'send_welcome_email'"],
        ),
        ("", {"SHADOW_WORKER_CONCURENCY": "3"}, ["did you mean 'SHADOW_WORKER_CONCURRENCY'"]),
        ("[worker]\n", {}, ["Cannot declare ('worker'"]),
        (
            '[task.charge]\nperpetual = { every = "1m" }\ncron = "@daily"\n',
            {},
            ["shadows.toml, key task.charge", "set perpetual or cron, not both"],
        ),
    ],
)
def test_config_check_fails_with_every_problem(
    project: Path, extra: str, env: dict[str, str], fragments: list[str]
) -> None:
    config(project, "memory://", "emails", extra=extra)
    result = run(project, "config", "check", env=env)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_a_worker_only_warns_about_an_unknown_variable(
    project: Path, redis_url: str, shadow_name: str
) -> None:
    config(project, redis_url, shadow_name)
    result = run(project, "worker", env={"SHADOW_WORKER_CONCURENCY": "3"})
    assert result.returncode == 0, result.stderr
    assert "Ignoring SHADOW_WORKER_CONCURENCY: no such setting" in result.stderr


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ('nmae = "x"\n', ["shadows.toml, key nmae: unknown setting 'nmae' (did you mean 'name'?)"]),
        (
            '[worker]\nconcurrency = 0\nredelivery_timeout = "soon"\n',
            [
                "(2 problems)",
                "key worker.concurrency: Input should be greater than 0",
                "key worker.redelivery_timeout: invalid duration 'soon'",
            ],
        ),
        ('tasks = ["myapp", "nowhere"]\n', ["cannot import tasks entry 'nowhere'"]),
        ("tasks = []\n", ["no tasks to run"]),
        ('tasks = ["json"]\n', ["no tasks found (tasks: json)"]),
        ("name = \n", ["not valid TOML"]),
    ],
)
def test_a_bad_config_never_starts_a_worker(project: Path, toml: str, fragments: list[str]) -> None:
    write(
        project,
        "shadows.toml",
        'url = "memory://"\ntasks = ["myapp"]\n' + toml
        if "tasks" not in toml
        else 'url = "memory://"\n' + toml,
    )
    result = run(project, "worker")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "started" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_an_import_error_shows_its_traceback_and_entry(project: Path) -> None:
    write(project, "broken.py", "import json\nraise RuntimeError('boom at import')\n")
    write(project, "shadows.toml", 'url = "memory://"\ntasks = ["broken"]\n')
    result = run(project, "worker", "--logging-format", "plain")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "boom at import" in result.stderr
    assert "tasks entry 'broken' (from shadows.toml, key tasks)" in result.stderr


def test_two_modules_with_one_task_name_is_an_error(project: Path) -> None:
    write(project, "myapp/other.py", BILLING)  # a second, different charge()
    config(project, "memory://", "emails")
    result = run(project, "config", "check")
    assert result.returncode == 2
    assert "Two different tasks named 'charge'" in result.stderr
    assert "myapp.billing.charges.charge and myapp.other.charge" in result.stderr


def test_a_module_naming_another_shadow_is_skipped_with_a_warning(
    project: Path, redis_url: str, shadow_name: str
) -> None:
    write(
        project,
        "myapp/elsewhere.py",
        "from shadows import Shadow\n"
        "shadow = Shadow(name='billing')\n"
        "@shadow.task\n"
        "async def audit() -> None: ...\n",
    )
    config(project, redis_url, shadow_name)
    result = run(project, "worker")
    assert result.returncode == 0, result.stderr
    assert "Skipping the tasks of Shadow(name='billing'" in result.stderr
    assert "tasks: charge, send_welcome_email" in result.stderr


def test_init_writes_a_commented_config_and_keeps_an_existing_one(project: Path) -> None:
    write(project, "pyproject.toml", '[project]\nname = "my app"\n')
    result = run(project, "init")
    assert result.returncode == 0, result.stderr
    written = (project / "shadows.toml").read_text()
    assert 'name = "my-app"' in written
    assert 'tasks = [\n    "myapp.tasks",\n]' in written or 'tasks = ["myapp.tasks"]' in written
    assert "# concurrency = 10" in written
    check = run(project, "config", "check")
    assert check.returncode == 0, check.stderr
    again = run(project, "init")
    assert again.returncode == 1 and "use --force" in again.stderr
    assert run(project, "init", "--force").returncode == 0


def test_config_names_the_file_on_every_command(project: Path) -> None:
    write(project, "conf/other.toml", 'name = "elsewhere"\nurl = "memory://"\n')
    result = run(project, "snapshot", "--json", "--config", "conf/other.toml")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["shadow"] == "elsewhere"
    shown = run(project, "config", "show", "--json", env={"SHADOW_CONFIG": "conf/other.toml"})
    assert json.loads(shown.stdout)["name"] == {"value": "elsewhere", "source": "file"}
    missing = run(project, "worker", "--config", "nope.toml")
    assert missing.returncode == 2
    assert "--config: no config file" in missing.stderr and "nope.toml" in missing.stderr

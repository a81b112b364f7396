"""The settings model: sources and their precedence, the config file's location, and every
configuration mistake reported at once with its origin. In-process, no Redis."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from shadows import Retry, Shadow, Timeout
from shadows.settings import ConfigError, activated, load_settings
from shadows.settings.effective import settings_entries, task_entries
from shadows.settings.model import Settings
from shadows.settings.reference import example, markdown

ROOT = Path(__file__).parent.parent


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_without_file_or_variables(tmp_path: Path) -> None:
    loaded = load_settings(environ={}, cwd=tmp_path)
    assert loaded.file is None
    assert loaded.settings.name == "shadows"
    assert loaded.settings.worker.concurrency == 10
    assert loaded.settings.worker.redelivery_timeout == timedelta(minutes=5)
    assert loaded.origin(("worker", "concurrency")).kind == "default"


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    write(
        tmp_path,
        "shadows.toml",
        """
        name = "from-file"
        url = "memory://file"
        [worker]
        concurrency = 3
        redelivery_timeout = "2m"
        minimum_check_interval = 0.5
        """,
    )
    environ = {"SHADOW_URL": "memory://env", "SHADOW_WORKER_CONCURRENCY": "4"}
    flags = {("worker", "concurrency"): (5, "--concurrency")}
    loaded = load_settings(flags, environ=environ, cwd=tmp_path)
    settings = loaded.settings
    assert (settings.name, settings.url) == ("from-file", "memory://env")
    assert settings.worker.concurrency == 5
    assert settings.worker.redelivery_timeout == timedelta(minutes=2)
    assert settings.worker.minimum_check_interval == timedelta(milliseconds=500)
    assert [loaded.origin(u).kind for u in [("name",), ("url",), ("worker", "concurrency")]] == [
        "file",
        "env",
        "flag",
    ]
    assert str(loaded.origin(("url",))) == "SHADOW_URL"
    assert str(loaded.origin(("name",))) == "shadows.toml, key name"
    entries = settings_entries(loaded)
    assert entries["worker.concurrency"] == {"value": 5, "source": "flag"}
    assert entries["worker.redelivery_timeout"] == {"value": "2m", "source": "file"}
    assert entries["worker.scheduling_resolution"] == {"value": "250ms", "source": "default"}


def test_every_existing_variable_still_works(tmp_path: Path) -> None:
    environ = {
        "SHADOW_URL": "redis://cache:6380/2",
        "SHADOW_NAME": "emails",
        "SHADOW_TASKS": "myapp.tasks, myapp.billing:tasks",
        "SHADOW_CODEC": "json",
        "SHADOW_SIGNING_KEY": "s3cret",
        "SHADOW_WORKER_NAME": "w1",
        "SHADOW_WORKER_CONCURRENCY": "7",
        "SHADOW_WORKER_REDELIVERY_TIMEOUT": "90s",
        "SHADOW_WORKER_RECONNECTION_DELAY": "1s",
        "SHADOW_WORKER_MINIMUM_CHECK_INTERVAL": "100ms",
        "SHADOW_WORKER_SCHEDULING_RESOLUTION": "100ms",
        "SHADOW_WORKER_SCHEDULE_AUTOMATIC_TASKS": "no",
        "SHADOW_WORKER_HEARTBEAT_INTERVAL": "1s",
        "SHADOW_WORKER_MISSED_HEARTBEATS": "5",
        "SHADOW_WORKER_MAX_DELIVERIES": "9",
        "SHADOW_WORKER_UNTIL_FINISHED": "1",
        "SHADOW_WORKER_HEALTHCHECK_PORT": "8080",
        "SHADOW_WORKER_METRICS_PORT": "9090",
        "SHADOW_WORKER_MAXIMUM_LOOP_LAG": "2s",
        "SHADOW_WORKER_ENDPOINT_HOST": "127.0.0.1",
        "SHADOW_MAX_MESSAGE_AGE": "1h",
        "SHADOW_LOGGING_LEVEL": "debug",
        "SHADOW_LOGGING_FORMAT": "json",
        "SHADOW_JSON": "1",  # a command's own switch: known, not a setting
    }
    loaded = load_settings(environ=environ, cwd=tmp_path)
    settings = loaded.settings
    assert loaded.warnings == []
    assert settings.tasks == ["myapp.tasks", "myapp.billing:tasks"]
    assert settings.signing_key is not None and settings.signing_key.get_secret_value() == "s3cret"
    worker = settings.worker
    assert (worker.name, worker.concurrency, worker.max_deliveries) == ("w1", 7, 9)
    assert worker.redelivery_timeout == timedelta(seconds=90)
    assert worker.schedule_automatic_tasks is False and worker.until_finished is True
    assert (worker.healthcheck_port, worker.metrics_port) == (8080, 9090)
    assert worker.endpoint_host == "127.0.0.1"
    assert settings.max_message_age == timedelta(hours=1)
    assert (settings.logging.level, settings.logging.format) == ("DEBUG", "json")
    assert settings_entries(loaded)["signing_key"] == {"value": "***", "source": "env"}


def test_the_nearest_shadows_toml_then_pyproject(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    write(tmp_path, "pyproject.toml", '[tool.shadows]\nname = "from-pyproject"\n')
    assert load_settings(environ={}, cwd=deep).settings.name == "from-pyproject"
    write(tmp_path / "a", "shadows.toml", 'name = "from-toml"\n')
    loaded = load_settings(environ={}, cwd=deep)
    assert loaded.settings.name == "from-toml"
    assert loaded.file is not None and loaded.file.path == tmp_path / "a" / "shadows.toml"
    assert loaded.folder == tmp_path / "a"


def test_a_pyproject_without_the_table_is_no_config(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[project]\nname = "x"\n')
    assert load_settings(environ={}, cwd=tmp_path).file is None


def test_config_flag_and_variable_name_the_file(tmp_path: Path) -> None:
    write(tmp_path, "shadows.toml", 'name = "near"\n')
    write(tmp_path, "conf/prod.toml", 'name = "prod"\n')
    write(tmp_path, "conf/staging.toml", 'name = "staging"\n')
    environ = {"SHADOW_CONFIG": "conf/staging.toml"}
    assert load_settings(environ=environ, cwd=tmp_path).settings.name == "staging"
    chosen = load_settings(config="conf/prod.toml", environ=environ, cwd=tmp_path)
    assert chosen.settings.name == "prod"
    with pytest.raises(ConfigError, match="--config: no config file") as raised:
        load_settings(config="missing.toml", environ={}, cwd=tmp_path)
    assert "missing.toml" in str(raised.value)
    with pytest.raises(ConfigError, match="SHADOW_CONFIG: no config file"):
        load_settings(environ={"SHADOW_CONFIG": "gone.toml"}, cwd=tmp_path)


def test_every_mistake_is_reported_at_once_with_its_origin(tmp_path: Path) -> None:
    write(
        tmp_path,
        "shadows.toml",
        """
        nmae = "typo"
        url = "http://nope"
        [worker]
        concurency = 3
        redelivery_timeout = "soon"
        [task.send]
        retry = { atempts = 3 }
        timeout = -1
        """,
    )
    environ = {"SHADOW_WORKER_MAX_DELIVERIES": "many"}
    with pytest.raises(ConfigError) as raised:
        load_settings(
            {("worker", "metrics_port"): (70000, "--metrics-port")}, environ=environ, cwd=tmp_path
        )
    message = str(raised.value)
    expected = [
        "invalid configuration (8 problems):",
        "shadows.toml, key nmae: unknown setting 'nmae' (did you mean 'name'?)",
        "shadows.toml, key url: Invalid shadow URL 'http://nope'",
        "shadows.toml, key worker.concurency: unknown setting 'concurency' "
        "(did you mean 'concurrency'?)",
        "shadows.toml, key worker.redelivery_timeout: invalid duration 'soon'",
        "shadows.toml, key task.send.retry.atempts: unknown setting 'atempts' "
        "(did you mean 'attempts'?)",
        "shadows.toml, key task.send.timeout: a duration cannot be negative",
        "SHADOW_WORKER_MAX_DELIVERIES: 'many': Input should be a valid integer",
        "--metrics-port: 70000: Input should be less than or equal to 65535",
    ]
    for fragment in expected:
        assert fragment in message, fragment


def test_a_broken_file_is_one_clear_problem(tmp_path: Path) -> None:
    write(tmp_path, "shadows.toml", "name = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as raised:
        load_settings(environ={}, cwd=tmp_path)
    assert str(tmp_path / "shadows.toml") in str(raised.value)


def test_unknown_variables_are_warnings_with_a_suggestion(tmp_path: Path) -> None:
    loaded = load_settings(environ={"SHADOW_WORKER_CONCURENCY": "3"}, cwd=tmp_path)
    [warning] = loaded.warnings
    assert str(warning) == (
        "SHADOW_WORKER_CONCURENCY: no such setting (did you mean 'SHADOW_WORKER_CONCURRENCY'?)"
    )
    assert loaded.settings.worker.concurrency == 10


def test_per_task_tables_from_the_file_and_variables(tmp_path: Path) -> None:
    write(
        tmp_path,
        "shadows.toml",
        """
        [task.send_welcome_email]
        retry = { attempts = 8, delay = "30s" }
        timeout = "2m"
        cron = "0 9 * * MON-FRI"
        """,
    )
    environ = {
        "SHADOW_TASK_SEND_WELCOME_EMAIL_TIMEOUT": "5m",
        "SHADOW_TASK_REPORT_RETRY": '{"attempts": "forever"}',
    }
    loaded = load_settings(environ=environ, cwd=tmp_path)
    table = loaded.task_settings("send_welcome_email")
    assert table is not None and table.retry is not None
    assert (table.retry.attempts, table.retry.delay) == (8, timedelta(seconds=30))
    assert table.timeout == timedelta(minutes=5)  # the variable wins over the file
    assert table.cron is not None and table.cron.expression == "0 9 * * MON-FRI"
    assert str(loaded.origin(("task", "send_welcome_email", "timeout"))) == (
        "SHADOW_TASK_SEND_WELCOME_EMAIL_TIMEOUT"
    )
    report = loaded.task_settings("Report")  # variables name tasks in capitals
    assert report is not None and report.retry is not None and report.retry.attempts == "forever"


def test_precedence_of_task_settings_file_over_decorator_over_default(tmp_path: Path) -> None:
    write(tmp_path, "shadows.toml", "[task.send]\nretry = { attempts = 8 }\n")
    loaded = load_settings(environ={}, cwd=tmp_path)
    with activated(loaded):
        shadow = Shadow()

    @shadow.task(retry=Retry(attempts=3, delay=timedelta(seconds=10)), key="s-{to}")
    async def send(to: str, timeout: Timeout = Timeout(timedelta(seconds=5))) -> None: ...

    @shadow.task
    async def plain() -> None: ...

    entries = task_entries(loaded, {"send": send, "plain": plain})
    assert entries["task.send.retry"] == {
        "value": {"attempts": 8, "delay": "10s"},  # merged field by field
        "source": "file",
    }
    assert entries["task.send.timeout"] == {"value": "5s", "source": "default"}
    assert entries["task.send.key"] == {"value": "s-{to}", "source": "decorator"}
    assert not any(key.startswith("task.plain.") for key in entries)
    env = load_settings(environ={"SHADOW_TASK_SEND_RETRY": '{"attempts": 2}'}, cwd=tmp_path)
    assert task_entries(env, {"send": send})["task.send.retry"]["source"] == "env"
    bare = load_settings(environ={}, cwd=ROOT / "docs")  # no config file there
    assert task_entries(bare, {"send": send})["task.send.retry"] == {
        "value": {"attempts": 3, "delay": "10s"},
        "source": "decorator",
    }


def test_shadow_takes_what_it_is_not_given_from_the_settings(tmp_path: Path) -> None:
    write(tmp_path, "shadows.toml", 'name = "emails"\nurl = "memory://emails"\ncodec = "json"\n')
    loaded = load_settings(environ={"SHADOW_WORKER_MISSED_HEARTBEATS": "7"}, cwd=tmp_path)
    with activated(loaded):
        configured = Shadow()
        explicit = Shadow(name="other", codec="pickle")
    assert (configured.name, configured.url, configured.codec.name) == (
        "emails",
        "memory://emails",
        "json",
    )
    assert configured.configured and configured.missed_heartbeats == 7
    assert (explicit.name, explicit.url, explicit.codec.name) == (
        "other",
        "memory://emails",
        "pickle",
    )
    assert not explicit.configured


def test_shadow_reads_the_file_of_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "shadows.toml", 'name = "here"\nurl = "memory://here"\n')
    monkeypatch.chdir(tmp_path)
    for variable in ("SHADOW_NAME", "SHADOW_URL"):
        monkeypatch.delenv(variable, raising=False)
    assert (Shadow().name, Shadow().url) == ("here", "memory://here")
    monkeypatch.setenv("SHADOW_NAME", "env-wins")
    assert Shadow().name == "env-wins"


def test_the_example_file_lists_every_setting_and_parses(tmp_path: Path) -> None:
    text = (ROOT / "shadows.toml.example").read_text()
    assert text == example(), (
        "shadows.toml.example is out of date: run "
        "`python -m shadows.settings.reference example > shadows.toml.example`"
    )
    write(tmp_path, "shadows.toml", text)
    loaded = load_settings(environ={}, cwd=tmp_path)
    assert loaded.settings == Settings()
    for field in [*Settings.model_fields, "concurrency", "redelivery_timeout", "format"]:
        assert f"{field} =" in text or f"[{field}" in text, field


def test_the_configuration_reference_is_up_to_date() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == markdown(), (
        "docs/configuration.md is out of date: run "
        "`python -m shadows.settings.reference markdown > docs/configuration.md`"
    )


def test_the_dashboard_settings_are_known_and_passed_on(tmp_path: Path) -> None:
    write(tmp_path, "shadows.toml", '[dashboard]\nport = 9000\ntoken = "a-long-token"\n')
    loaded = load_settings(environ={"SHADOW_DASHBOARD_HISTORY": "2h"}, cwd=tmp_path)
    assert loaded.warnings == []  # neither the table nor the variable is a mistake
    assert loaded.settings.dashboard == {"port": 9000, "token": "a-long-token", "history": "2h"}
    entries = settings_entries(loaded)
    assert entries["dashboard.token"] == {"value": "***", "source": "file"}
    assert entries["dashboard.history"] == {"value": "2h", "source": "env"}


def test_the_dashboard_reads_the_same_file_as_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shadows.dashboard import DashboardSettings

    for variable in ("SHADOW_CONFIG", "SHADOW_DASHBOARD_PORT"):
        monkeypatch.delenv(variable, raising=False)
    deep = tmp_path / "src" / "app"
    deep.mkdir(parents=True)
    write(tmp_path, "pyproject.toml", "[tool.shadows.dashboard]\nport = 9100\n")
    monkeypatch.chdir(deep)
    assert DashboardSettings.load().port == 9100
    write(tmp_path / "src", "shadows.toml", "[dashboard]\nport = 9200\n")
    assert DashboardSettings.load().port == 9200

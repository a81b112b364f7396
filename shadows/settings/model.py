"""The settings model: every setting of the shadow, the worker and the commands.

One pydantic-settings model, so that flags, ``SHADOW_*`` variables and the config file are
checked by the same rules. The top level is the shadow; each table is a section, and a
section's settings are read from ``SHADOW_<SECTION>_<SETTING>`` (see :mod:`.sources`).
Adding a section is adding a :class:`Section` subclass and one field of :class:`Settings`.
Each field's description is its one-line documentation: ``shadows.toml.example``,
``docs/configuration.md`` and the ``--help`` of the flags are written from it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shadows.core.connection import normalize_url
from shadows.core.durations import format_duration, parse_duration
from shadows.core.keys import validate_name
from shadows.core.serialization import codec_named

#: As ``registry.MINIMUM_HEARTBEAT_INTERVAL`` (not imported: the registry needs the shadow).
MINIMUM_HEARTBEAT_INTERVAL = timedelta(milliseconds=10)


def _duration(value: Any) -> Any:
    if isinstance(value, timedelta | bool):
        return value  # a bool is refused by the timedelta validation that follows
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, not {value!r}")
        return timedelta(seconds=value)
    if isinstance(value, str):
        return parse_duration(value)
    return value


#: ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"`` or a number of seconds.
Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
Port = Annotated[int, Field(ge=0, le=65535)]
Positive = Annotated[int, Field(gt=0)]


class Section(BaseModel):
    """A table of the config file: unknown keys are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class WorkerSettings(Section):
    """``[worker]``: how ``shadows worker`` runs (env ``SHADOW_WORKER_*``)."""

    name: str | None = Field(None, description="Worker name (default: host-pid).")
    concurrency: Positive = Field(10, description="Tasks run at once.")
    redelivery_timeout: Duration = Field(
        timedelta(minutes=5),
        description="How long a dead worker's task waits before another worker takes it.",
    )
    reconnection_delay: Duration = Field(
        timedelta(seconds=5), description="Longest wait between attempts to reach Redis again."
    )
    minimum_check_interval: Duration = Field(
        timedelta(milliseconds=250),
        description="How long an idle worker blocks on the stream before checking again.",
    )
    scheduling_resolution: Duration = Field(
        timedelta(milliseconds=250),
        description="Longest sleep of the scheduler between looks for due tasks.",
    )
    schedule_automatic_tasks: bool = Field(
        True, description="Start automatic perpetual tasks when the worker starts."
    )
    heartbeat_interval: Duration = Field(
        timedelta(seconds=2), description="How often workers tell the registry they are alive."
    )
    missed_heartbeats: Positive = Field(
        3,
        description="A worker that dies drops out of `shadows workers ls` after this many "
        "heartbeat intervals without a heartbeat.",
    )
    max_deliveries: Positive = Field(
        5,
        description="Dead-letter a message as poison once it was delivered this often "
        "without being acknowledged (its workers kept dying).",
    )
    unknown_task_grace: Duration = Field(
        timedelta(minutes=5),
        description="Hand a message for a task this worker does not register back for the "
        "workers that do; dead-letter it once this long has passed with no live worker "
        "registering it (a rolling deploy).",
    )
    until_finished: bool = Field(
        False, description="Exit once nothing is due, scheduled or running."
    )
    healthcheck_port: Port | None = Field(
        None,
        description="Serve a health check on this port: GET / answers 200 while the worker "
        "really works (reads, Redis answers, event loop not blocked), else 503.",
    )
    metrics_port: Port | None = Field(
        None,
        description="Serve Prometheus metrics on this port (the same port as the health "
        "check is fine: metrics are then at /metrics).",
    )
    endpoint_host: str | None = Field(
        None,
        description="Serve the health check and metrics on this interface only (a host "
        "name or address, such as 127.0.0.1); default: every interface.",
    )
    maximum_loop_lag: Duration = Field(
        timedelta(seconds=5),
        description="How long the event loop may be blocked before the health check fails.",
    )

    @field_validator("heartbeat_interval")
    @classmethod
    def _beat(cls, value: timedelta) -> timedelta:
        if value < MINIMUM_HEARTBEAT_INTERVAL:
            raise ValueError("heartbeat_interval must be a positive duration of at least 10ms")
        return value


class LoggingSettings(Section):
    """``[logging]``: the log output of the commands (env ``SHADOW_LOGGING_*``)."""

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        BeforeValidator(lambda value: value.upper() if isinstance(value, str) else value),
    ] = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    format: Literal["rich", "plain", "json"] = Field("rich", description="rich, plain or json.")


class RetryTable(Section):
    """``retry = {...}``: ``delay`` for a fixed delay, or ``minimum_delay`` and
    ``maximum_delay`` for a delay doubling after each try (``ExponentialRetry``)."""

    attempts: Positive | Literal["forever"] | None = None
    delay: Duration | None = None
    minimum_delay: Duration | None = None
    maximum_delay: Duration | None = None


class PerpetualTable(Section):
    """``perpetual = { every = "10m", automatic = true }``."""

    every: Duration | None = None
    automatic: bool | None = None


def _cron(value: Any) -> Any:
    return {"expression": value} if isinstance(value, str) else value


class CronTable(Section):
    """``cron = "0 9 * * MON-FRI"`` or ``cron = { expression = ..., automatic = true,
    tz = "Europe/Paris" }``."""

    expression: str
    automatic: bool | None = None
    tz: str | None = None


class ConcurrencyTable(Section):
    """``concurrency = { max_concurrent = 2, argument_name = "customer_id" }``."""

    max_concurrent: Positive | None = None
    argument_name: str | None = None
    scope: str | None = None


def _cooldown(value: Any) -> Any:
    return {"window": value} if isinstance(value, str) else value


class CooldownTable(Section):
    """``cooldown = "5m"`` or ``cooldown = { window = "5m", scope = "customer_id" }``."""

    window: Duration | None = None
    scope: str | None = None


class RateLimitTable(Section):
    """``rate_limit = { limit = 100, per = "1m", drop = false, scope = "host" }``."""

    limit: Positive | None = None
    per: Duration | None = None
    drop: bool | None = None
    scope: str | None = None


def _debounce(value: Any) -> Any:
    return {"settle": value} if isinstance(value, str) else value


class DebounceTable(Section):
    """``debounce = "2s"`` or ``debounce = { settle = "2s", max_wait = "30s", keep =
    "last", scope = "account" }``."""

    settle: Duration | None = None
    max_wait: Duration | None = None
    keep: Literal["last", "first"] | None = None
    scope: str | None = None


class TaskSettings(Section):
    """``[task.NAME]``: one task's behaviours, overriding its decorator's (and its
    parameter defaults'); keys left out keep the task's own values."""

    retry: RetryTable | None = Field(None, description="How failed runs are tried again.")
    timeout: Duration | None = Field(None, description="Cancel a run after this long.")
    perpetual: PerpetualTable | None = Field(
        None, description="Run again `every` after each run; `automatic` starts it."
    )
    cron: Annotated[CronTable | None, BeforeValidator(_cron)] = Field(
        None, description="Run at the moments a cron expression matches."
    )
    concurrency: ConcurrencyTable | None = Field(
        None, description="At most `max_concurrent` runs at once (per `argument_name`)."
    )
    cooldown: Annotated[CooldownTable | None, BeforeValidator(_cooldown)] = Field(
        None, description="Drop runs starting within `window` of the last (per `scope`)."
    )
    rate_limit: RateLimitTable | None = Field(
        None, description="At most `limit` starts per `per` (per `scope`)."
    )
    debounce: Annotated[DebounceTable | None, BeforeValidator(_debounce)] = Field(
        None,
        description="Collapse submissions within `settle` of each other into one run "
        "(applied by producers that read this file).",
    )
    results: bool | None = Field(
        None, description="Keep the task's return values (false: never, for this task)."
    )


class Settings(BaseSettings):
    """Every setting, at its effective value (see :func:`load_settings` for the sources).

    The top level is the shadow that producers and workers share.
    """

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    name: str = Field("shadows", description="Name of the shadow (the shared queue).")
    url: str = Field(
        "redis://localhost:6379/0",
        description="Redis URL (redis://, rediss://, unix://, valkey://, memory://, "
        "redis+sentinel://, redis+cluster://).",
    )
    tasks: list[str] = Field(
        [],
        description="Task modules or packages to import (a package with all its "
        "submodules), or module:attribute collections (comma-separated in the variable).",
    )
    codec: str = Field(
        "pickle", description="How task arguments are encoded: pickle, json, msgpack."
    )
    signing_key: SecretStr | None = Field(
        None, description="Sign payloads with this key, and refuse unsigned or forged ones."
    )
    max_message_age: Duration | None = Field(
        None,
        description="With a signing key, refuse to run signed messages older than this "
        "(counted from signing, or from the due time if later).",
    )
    execution_ttl: Duration = Field(
        timedelta(minutes=15), description="How long the state of a finished task is kept."
    )
    results: bool = Field(True, description="Keep the return value of each task for execution_ttl.")
    result_max_bytes: Positive = Field(
        1_048_576,
        description="A task whose encoded return value is larger fails with an error "
        "(results are for small values, not bulk data).",
    )
    dead_letter_ttl: Duration = Field(
        timedelta(days=7), description="How long tasks that failed for good are kept."
    )
    dead_letter_limit: Positive = Field(
        10_000, description="At most this many dead letters are kept (the oldest go first)."
    )
    shards: Positive = Field(
        1,
        description="Spread the queue over this many shards (hash tags), so that one "
        "shadow can use every master of a Redis Cluster: see docs/scaling.md.",
    )
    worker: WorkerSettings = Field(default_factory=WorkerSettings)  # type: ignore[arg-type]
    logging: LoggingSettings = Field(default_factory=LoggingSettings)  # type: ignore[arg-type]
    task: dict[str, TaskSettings] = Field(
        {}, description="Per-task settings, by task name: see [task.NAME]."
    )
    dashboard: dict[str, Any] = Field(
        {},
        description="The web dashboard's settings (SHADOW_DASHBOARD_*), checked by "
        "`shadows dashboard`: see docs/dashboard.md.",
    )

    @field_validator("max_message_age")
    @classmethod
    def _age(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("max_message_age must be a positive duration")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_name(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return normalize_url(value)

    @field_validator("codec")
    @classmethod
    def _codec(cls, value: str) -> str:
        codec_named(value)
        return value.lower()

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags, variables and the file are merged by ``load_settings``, which keeps
        # where each value came from; the model itself only validates what it is given.
        return (init_settings,)


#: The sections of :class:`Settings` (tables of the file, ``SHADOW_<SECTION>_*`` variables).
SECTIONS: dict[str, type[Section]] = {"worker": WorkerSettings, "logging": LoggingSettings}
#: Sections whose settings another model checks (the dashboard's, an optional extra):
#: their table and ``SHADOW_<SECTION>_*`` variables are known here and passed on as given.
FOREIGN_SECTIONS = ("dashboard",)
#: The keys of a ``[task.NAME]`` table.
TASK_KEYS = tuple(TaskSettings.model_fields)

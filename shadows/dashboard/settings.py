"""The dashboard's settings: flags, ``SHADOW_DASHBOARD_*`` variables, ``[dashboard]`` in
``shadows.toml``, defaults; the first that gives a value wins.

The shadow itself comes from ``SHADOW_NAME`` and ``SHADOW_URL``, like every other command
(``SHADOW_CODEC`` and ``SHADOW_SIGNING_KEY`` are read by :class:`~shadows.Shadow`).
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

from shadows.core.durations import parse_duration
from shadows.settings.sources import locate

#: The table of the settings file that holds the dashboard's settings.
TABLE = "dashboard"
ENV_PREFIX = "SHADOW_DASHBOARD_"

_table: ContextVar[dict[str, Any] | None] = ContextVar("shadows_dashboard_table", default=None)


class SettingsError(ValueError):
    """Settings that cannot work, with where each bad value came from."""


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


class DashboardSettings(BaseSettings):
    """Everything ``shadows dashboard`` and :func:`~shadows.dashboard.create_app` need."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    #: The shadow to show (``SHADOW_NAME``).
    name: str | None = None
    #: Its Redis (``SHADOW_URL``); its password never reaches a page.
    url: str | None = None
    #: Task collections (``module:attribute``) whose calls the pages may show: only the
    #: arguments these tasks annotate ``Logged``; other tasks' arguments are never decoded.
    tasks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: Needed for every action (strike, restore, retry, purge, cancel); none: read-only.
    token: SecretStr | None = None
    #: How often the one poller of this process reads Redis.
    poll_interval: timedelta = timedelta(seconds=1)
    #: How far back the charts go (kept in this process's memory).
    history: timedelta = timedelta(hours=1)
    #: Rows per page of the scheduled and dead-letter lists.
    page_size: int = Field(50, ge=1, le=1000)
    #: Origins (``https://ops.example.com``) allowed to post actions besides the
    #: dashboard's own (behind a proxy that rewrites the Host header).
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: How long a login lasts.
    session_lifetime: timedelta = timedelta(hours=12)
    #: The path prefix a reverse proxy serves the dashboard under (``/ops/shadows``).
    root_path: str = ""

    _durations = field_validator("poll_interval", "history", "session_lifetime", mode="before")(
        _duration
    )

    @field_validator("poll_interval")
    @classmethod
    def _poll(cls, value: timedelta) -> timedelta:
        if not timedelta(milliseconds=100) <= value <= timedelta(minutes=1):
            raise ValueError("must be between 100ms and 1m")
        return value

    @field_validator("history")
    @classmethod
    def _history(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=1):
            raise ValueError("must be between 1m and 1d")
        return value

    @field_validator("tasks", "allowed_origins", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        if isinstance(value, str):  # a comma-separated env var
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 8:
            raise ValueError("must be at least 8 characters (or unset, for a read-only dashboard)")
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
        return (
            init_settings,
            env_settings,
            _SharedEnvSource(settings_cls),
            _TableSource(settings_cls),
        )

    @classmethod
    def load(cls, config: Path | str | None = None, **flags: Any) -> DashboardSettings:
        """The settings from ``flags`` (``None`` values are not given), the environment and
        the ``[dashboard]`` table of ``config`` (else ``$SHADOW_CONFIG``, else
        the nearest ``shadows.toml``, else ``[tool.shadows]``). Raises :class:`SettingsError`."""
        given = {name: value for name, value in flags.items() if value is not None}
        path, table = _read_table(config)
        token = _table.set(table)
        try:
            return cls(**given)
        except ValidationError as error:
            raise SettingsError(_explain(error, given, table, path)) from None
        except SourceError as error:
            raise SettingsError(f"dashboard settings: {error}") from None
        finally:
            _table.reset(token)

    @property
    def actions_allowed(self) -> bool:
        return self.token is not None


#: Settings every ``shadows`` command shares, under their own variables.
SHARED_VARIABLES = {"name": "SHADOW_NAME", "url": "SHADOW_URL", "tasks": "SHADOW_TASKS"}


class _SharedEnvSource(PydanticBaseSettingsSource):
    """``SHADOW_NAME``, ``SHADOW_URL`` and ``SHADOW_TASKS``, below the dashboard's own
    ``SHADOW_DASHBOARD_*`` variables."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = SHARED_VARIABLES.get(field_name)
        return (os.environ.get(variable) if variable else None), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {
            name: os.environ[variable]
            for name, variable in SHARED_VARIABLES.items()
            if os.environ.get(variable)
        }


class _TableSource(PydanticBaseSettingsSource):
    """The ``[dashboard]`` table of the settings file being loaded."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_table.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_table.get() or {})


def _read_table(config: Path | str | None) -> tuple[Path | None, dict[str, Any]]:
    explicit = config or os.environ.get("SHADOW_CONFIG") or None
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise SettingsError(f"settings file {str(path)!r} not found")
        in_pyproject = path.name == "pyproject.toml"
    else:  # the file every command reads: the nearest shadows.toml, or [tool.shadows]
        found = locate(None, {}, Path.cwd())
        if found is None:
            return None, {}
        path, in_pyproject = found.path, found.table is not None
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"cannot read the settings file {str(path)!r}: {error}") from None
    if in_pyproject:
        document = document.get("tool", {}).get("shadows", {})
    table = document.get(TABLE, {})
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: [{TABLE}] must be a table")
    return path, table


def _explain(
    error: ValidationError, flags: dict[str, Any], table: dict[str, Any], path: Path | None
) -> str:
    lines = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "?"
        if field in flags:
            where = "the command line" if field != "token" else "the token given"
        elif f"{ENV_PREFIX}{field.upper()}" in os.environ:
            where = f"${ENV_PREFIX}{field.upper()}"
        elif os.environ.get(SHARED_VARIABLES.get(field, "-")):
            where = f"${SHARED_VARIABLES[field]}"
        elif field in table:
            where = f"{path} [{TABLE}]"
        else:
            where = "the settings"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown setting"
        lines.append(f"dashboard setting {field!r} from {where}: {message}")
    return "; ".join(lines)

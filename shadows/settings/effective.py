"""Every effective setting with its source, for ``shadows config show`` and ``check``.

Keys are dotted (``url``, ``worker.concurrency``, ``task.send_email.retry``); values are
what JSON can hold (durations as ``"5m"``), with the URL's password and the signing key
redacted; sources are ``flag``, ``env``, ``file``, ``decorator`` or ``default``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from shadows.core.durations import format_duration
from shadows.core.functions import RESULTS_ATTRIBUTE
from shadows.settings.loading import Loaded
from shadows.settings.model import FOREIGN_SECTIONS, SECTIONS, TASK_KEYS, Settings
from shadows.settings.overrides import as_table, declared, overridden

Entry = dict[str, Any]
#: The table keys that both set when a task runs again: one replaces the other.
_WHEN = {"perpetual", "cron"}


def redacted_url(url: str) -> str:
    """``url`` with its password hidden."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def _shown(key: str, value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, timedelta):
        return format_duration(value)
    if key == "url" and isinstance(value, str):
        return redacted_url(value)
    return value


def settings_entries(loaded: Loaded) -> dict[str, Entry]:
    """``{"worker.concurrency": {"value": 10, "source": "default"}, ...}``."""
    entries: dict[str, Entry] = {}
    settings = loaded.settings
    for field in Settings.model_fields:
        if field == "task":
            continue
        if field in FOREIGN_SECTIONS:  # only what was given; secrets hidden
            for inner, value in getattr(settings, field).items():
                shown = "***" if "token" in inner or "key" in inner else value
                entries[f"{field}.{inner}"] = _entry(shown, loaded, (field, inner))
            continue
        if field in SECTIONS:
            section = getattr(settings, field)
            for inner in SECTIONS[field].model_fields:
                value = _shown(inner, getattr(section, inner))
                entries[f"{field}.{inner}"] = _entry(value, loaded, (field, inner))
        else:
            entries[field] = _entry(_shown(field, getattr(settings, field)), loaded, (field,))
    return entries


def _entry(value: Any, loaded: Loaded, unit: tuple[str, ...]) -> Entry:
    return {"value": value, "source": loaded.origin(unit).kind}


def _shown_entry(behaviour: Any, source: str) -> Entry:
    return {"value": as_table(behaviour)[1], "source": source}


def task_entries(loaded: Loaded, tasks: Mapping[str, Callable[..., Any]]) -> dict[str, Entry]:
    """The behaviours of each of ``tasks`` (as registered, before the file's tables) and
    the tables' overrides: ``task.NAME.KEY`` entries from the file or the variables,
    else from the decorator (or, for a parameter default, ``default``)."""
    entries: dict[str, Entry] = {}
    for name in sorted(tasks):
        own = declared(tasks[name])
        table = loaded.task_settings(name)
        changes = overridden(table, own) if table is not None else {}
        spelled = next((t for t in loaded.settings.task if t.lower() == name.lower()), name)
        shown = {
            as_table(b)[0]: (b, "decorator" if w == "decorator" else "default")
            for b, w in own.values()
        }
        for key in TASK_KEYS:
            if key in changes:
                origin = loaded.origin(("task", spelled, key)).kind
                entries[f"task.{name}.{key}"] = _shown_entry(changes[key], origin)
            elif key in shown and not (key in _WHEN and _WHEN & set(changes)):
                entries[f"task.{name}.{key}"] = _shown_entry(*shown[key])
        if table is not None and table.results is not None:
            origin = loaded.origin(("task", spelled, "results")).kind
            entries[f"task.{name}.results"] = {"value": table.results, "source": origin}
        elif getattr(tasks[name], RESULTS_ATTRIBUTE, True) is False:
            entries[f"task.{name}.results"] = {"value": False, "source": "decorator"}
        key_spec = getattr(tasks[name], "key", None)
        if isinstance(key_spec, str):
            entries[f"task.{name}.key"] = {"value": key_spec, "source": "decorator"}
    return entries

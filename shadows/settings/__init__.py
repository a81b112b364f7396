"""Settings: one model, read from flags, ``SHADOW_*`` variables, ``shadows.toml``."""

from shadows.settings.loading import (
    Loaded,
    activate,
    activated,
    current,
    current_settings,
    load_settings,
)
from shadows.settings.model import Settings, TaskSettings
from shadows.settings.problems import ConfigError, Problem
from shadows.settings.sources import ConfigFile, Origin

__all__ = [
    "ConfigError",
    "ConfigFile",
    "Loaded",
    "Origin",
    "Problem",
    "Settings",
    "TaskSettings",
    "activate",
    "activated",
    "current",
    "current_settings",
    "load_settings",
]

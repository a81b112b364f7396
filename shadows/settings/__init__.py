"""Settings: one model, read from flags, ``SHADOW_*`` variables, ``shadows.toml``."""

from .loading import Loaded, activate, activated, current, current_settings, load_settings
from .model import Settings, TaskSettings
from .problems import ConfigError, Problem
from .sources import ConfigFile, Origin

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

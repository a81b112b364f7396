"""The private redis-server of a chaos run: the tests' ``RedisProcess`` (one definition for
both), importable from here."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[2] / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)

from redis_server import RedisProcess, server_binary  # noqa: E402

__all__ = ["RedisProcess", "server_binary"]

"""The pytest plugin shipped with shadows (registered through the ``pytest11`` entry point).

Fixtures:

* ``isolated_shadow``: points the application's own shadows (every ``Shadow()`` whose name
  and URL come from the settings, like a module-level ``shadow = Shadow()``) at a backend
  of the test's own, under a fresh name, for the time of one test, and gives the shadow a
  worker runs: every task of the ``tasks`` setting's modules (and of the application's
  shadows already imported), with the ``[task.NAME]`` tables applied. ``task.schedule()``
  then writes there.
* ``shadows_worker``: a :class:`~shadows.Worker` on that shadow:
  ``await shadows_worker.run_until_finished()`` runs what the test scheduled.

The backend is ``memory://`` (a new in-process server per test) unless ``--shadows-url``
or the ``shadows_url`` ini option names a Redis, where each test's keys are deleted after
it. The fixtures are plain (not async) fixtures, so they work with any async plugin.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from shadows.core.connection import forget_memory_server, is_memory
from shadows.core.layout import every_shard
from shadows.producer.shadow import Shadow, configured_shadows
from shadows.settings import activated, current
from shadows.settings.discovery import Discovered, apply_tables, discover, gather
from shadows.settings.loading import Loaded
from shadows.worker.worker import Worker

#: Test workers look for work often: tests wait on them.
_FAST = timedelta(milliseconds=20)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shadows")
    group.addoption(
        "--shadows-url",
        default=None,
        help="Redis URL for the shadows fixtures (default: a memory:// server per test).",
    )
    parser.addini("shadows_url", "Redis URL for the shadows fixtures", default="")


@pytest.fixture
def shadows_url(request: pytest.FixtureRequest) -> str:
    """The backend of this test's shadow."""
    configured = request.config.getoption("--shadows-url") or request.config.getini("shadows_url")
    return str(configured) if configured else f"memory://test-{uuid.uuid4().hex}"


@pytest.fixture
def isolated_shadow(shadows_url: str) -> Iterator[Shadow]:
    """The application's shadows, on a backend and under a name of this test's own."""
    base = current()
    name = f"test-{uuid.uuid4().hex[:12]}"
    settings = base.settings.model_copy(update={"name": name, "url": shadows_url})
    loaded = Loaded(settings, dict(base.origins), base.file, [])
    with activated(loaded):
        found = discover(loaded) if settings.tasks else Discovered()
        applications = [s for s in list(configured_shadows) if s is not None]
        previous = [(s, s.name, s.url) for s in applications]
        for application in applications:
            application.retarget(name, shadows_url)
        shadow = Shadow()
        known = [*found.shadows, *applications]
        found.shadows = [s for i, s in enumerate(known) if s is not shadow and s not in known[:i]]
        problems = gather(shadow, found) + apply_tables(loaded, shadow)
        if problems:
            raise pytest.UsageError("; ".join(str(problem) for problem in problems))
        try:
            yield shadow
        finally:
            asyncio.run(_clean(shadow, [s for s, _, _ in previous]))
            for application, old_name, old_url in previous:
                application.retarget(old_name, old_url)


async def _clean(shadow: Shadow, others: list[Shadow]) -> None:
    """Delete the test's keys (a real Redis outlives the test) and close every link."""
    if is_memory(shadow.url):
        forget_memory_server(shadow.url)
    else:
        client = shadow.client
        keys = []
        for shard in await every_shard(shadow):  # each shard's prefix (shadows.core.layout)
            keys += [key async for key in client.scan_iter(match=f"{shard.prefix}*")]
        if keys:
            await client.delete(*keys)
    for each in [shadow, *others]:
        await each.aclose()


@pytest.fixture
def shadows_worker(isolated_shadow: Shadow) -> Worker:
    """A worker of the test's shadow; ``await shadows_worker.run_until_finished()``."""
    return Worker(isolated_shadow, minimum_check_interval=_FAST, scheduling_resolution=_FAST)

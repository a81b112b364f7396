from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shadows import Shadow
from shadows.core.layout import every_shard

sys.path.insert(0, str(Path(__file__).parent))

from redis_server import RedisProcess
from redis_topologies import Cluster, SentinelGroup, missing_binaries

#: Backends the behavioural tests can also run on, when asked for:
#: ``SHADOW_TEST_BACKENDS=cluster,sentinel`` (a cluster and a sentinel setup the suite starts).
OPTIONAL_BACKENDS = ("cluster", "sentinel")


def _backends() -> list[str]:
    asked = [b.strip() for b in os.environ.get("SHADOW_TEST_BACKENDS", "").split(",") if b.strip()]
    unknown = [backend for backend in asked if backend not in OPTIONAL_BACKENDS]
    if unknown:
        raise ValueError(
            f"SHADOW_TEST_BACKENDS: unknown backend(s) {', '.join(unknown)}; "
            f"choose among {', '.join(OPTIONAL_BACKENDS)}"
        )
    return ["redis", "memory", *dict.fromkeys(asked)]


BACKENDS = _backends()

# Hypothesis' per-example deadline (200 ms) measures the machine, not the code: on a loaded
# CI box a garbage collection or a descheduled process fails an example that is correct.
settings.register_profile("shadows", deadline=None)
settings.load_profile("shadows")

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: REDIS_URL, or a throwaway redis-server (failing, never skipping)."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    with RedisProcess() as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A Redis Cluster of 3 masters and 3 replicas, started once for the session."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"cannot start a Redis Cluster: {missing}")
    with Cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelGroup]:
    """A master, a replica and 3 sentinels (quorum 2), started once for the session."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"cannot start Redis Sentinel: {missing}")
    with SentinelGroup() as sentinels:
        yield sentinels


@pytest.fixture(scope="session")
def metric_reader() -> InMemoryMetricReader:
    """An SDK meter provider for the rest of the session (the API allows only one), shared
    by every test that reads the OpenTelemetry metrics."""
    reader = InMemoryMetricReader()
    otel_metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if backend == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    if backend == "sentinel":
        return str(request.getfixturevalue("redis_sentinel").url)
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def shadow_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def shadow(url: str, shadow_name: str) -> AsyncIterator[Shadow]:
    async with Shadow(name=shadow_name, url=url) as opened:
        yield opened
        await _cleanup(opened)


async def _cleanup(shadow: Shadow) -> None:
    """Delete every key of the test's shadow (the shared Redis outlives the test)."""
    try:
        client = shadow.client
        keys = []
        for shard in await every_shard(shadow):  # every shard's prefix
            keys += [k async for k in client.scan_iter(match=f"{shard.prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    except Exception:
        pass


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    message: str = "condition",
) -> None:
    """Wait until ``condition()`` holds, checking every few milliseconds; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(0.005)


class LoopStalls:
    """The longest time this event loop went without running anything (a descheduled
    process, a full garbage collection), while the ``async with`` block runs.

    For tests whose outcome rightly changes when the whole process stalls longer than a
    margin they set (a worker fences a claim it could not renew in time)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.longest = max(self.longest, time.monotonic() - before - 0.01)

    async def __aenter__(self) -> LoopStalls:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).parent.parent


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Collect what is left once every test has ended, and name it on the terminal.

    A client found only now (a reference cycle the collector had not reached) belongs to
    no test any more: a test's own leaks fail that test, through the unraisable-exception
    check after each test. Run with ``PYTHONTRACEMALLOC=20`` to see where it was made.
    """
    import gc

    left: list[str] = []
    previous = sys.unraisablehook

    def note(unraisable: sys.UnraisableHookArgs) -> None:
        left.append(f"{unraisable.err_msg or 'Exception ignored in'}: {unraisable.object!r}")

    sys.unraisablehook = note
    try:
        gc.collect()
    finally:
        sys.unraisablehook = previous
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in left:
        if reporter is not None:
            reporter.write_line(f"left after the last test (not a failure): {line}", yellow=True)

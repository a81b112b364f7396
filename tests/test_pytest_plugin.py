"""The pytest plugin shipped with shadows, run on a small project by ``pytester``."""

from __future__ import annotations

import pytest
from redis import Redis

from shadows.core.keys import Keys

APP = """
from shadows import Retry, Shadow

shadow = Shadow()
sent: list[str] = []

@shadow.task(key="welcome-{customer_id}", retry=Retry(attempts=2))
async def send_welcome_email(customer_id: int, name: str) -> None:
    sent.append(name)
    if name == "flaky" and len(sent) == 1:
        raise RuntimeError("once")
"""

TESTS = """
import app
from app import send_welcome_email, sent, shadow

async def test_a_decorated_task_runs_on_the_test_worker(isolated_shadow, shadows_worker):
    with open("names.txt", "a") as names:
        names.write(isolated_shadow.name + "\\n")
    assert shadow.name == isolated_shadow.name and shadow.name.startswith("test-")
    assert shadow.url == isolated_shadow.url
    await send_welcome_email.schedule(1, "Ann")
    await send_welcome_email.schedule(1, "Ann again")  # same key: ignored
    assert await isolated_shadow.task_state("welcome-1") == "queued"
    await shadows_worker.run_until_finished()
    assert sent == ["Ann"]

async def test_each_test_has_a_fresh_shadow(isolated_shadow, shadows_worker):
    with open("names.txt", "a") as names:
        names.write(isolated_shadow.name + "\\n")
    sent.clear()
    assert await isolated_shadow.task_state("welcome-1") is None
    await send_welcome_email.schedule(2, "flaky")
    await shadows_worker.run_until_finished()
    assert sent == ["flaky", "flaky"]  # retried as the decorator says

def test_the_application_shadow_is_restored_after_the_fixture():
    assert shadow.name == "app" and shadow.url == "{url}"
"""


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_the_fixtures_isolate_the_application_shadow(
    pytester: pytest.Pytester, backend: str, request: pytest.FixtureRequest
) -> None:
    pytester.makefile(".toml", shadows='name = "app"\nurl = "memory://app"\ntasks = ["app"]\n')
    pytester.makepyfile(app=APP, test_app=TESTS.replace("{url}", "memory://app"))
    args = ["-o", "asyncio_mode=auto"]  # the plugin comes through its pytest11 entry point
    url = ""
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        args += ["--shadows-url", url]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=3)
    names = (pytester.path / "names.txt").read_text().split()
    assert len(set(names)) == 2  # a fresh shadow per test
    if url:  # each test's keys are gone from the real Redis
        client = Redis.from_url(url)
        for name in names:
            assert list(client.scan_iter(match=f"{{{name}}}:*")) == []
        client.close()


SHARDED_TESTS = """
from datetime import UTC, datetime, timedelta

from app import send_welcome_email, shadow

async def test_tasks_left_in_every_shard(isolated_shadow):
    with open("names.txt", "a") as names:
        names.write(isolated_shadow.name + "\\n")
    assert isolated_shadow.shards == 3
    later = datetime.now(UTC) + timedelta(hours=1)
    for n in range(12):
        await send_welcome_email.options(when=later).schedule(n, "later")
        await send_welcome_email.options(key=f"now-{n}").schedule(n, "now")
"""


def test_the_cleanup_covers_every_shard(
    pytester: pytest.Pytester, request: pytest.FixtureRequest
) -> None:
    """Issue 14: with shards = 3, the keys a test leaves in each shard's prefix are gone."""
    pytester.makefile(
        ".toml", shadows='name = "app"\nurl = "memory://app"\ntasks = ["app"]\nshards = 3\n'
    )
    pytester.makepyfile(app=APP, test_app=SHARDED_TESTS)
    url = request.getfixturevalue("redis_url")
    result = pytester.runpytest_subprocess("-o", "asyncio_mode=auto", "--shadows-url", url)
    result.assert_outcomes(passed=1)
    [name] = (pytester.path / "names.txt").read_text().split()
    client = Redis.from_url(url)
    for shard in range(3):
        prefix = Keys(name, shard).prefix
        assert list(client.scan_iter(match=f"{prefix}*")) == [], prefix
    client.close()

"""Dead letters: kept with their error, listable, re-enqueueable, purgeable, bounded."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from shadows import Retry, Shadow, Worker
from shadows.core.execution import now_ms
from shadows.core.keys import WORKER_GROUP
from shadows.worker.reader import entries_of
from test_cli import shadows_cli_in_process
from worker_tasks import pay, read_records, record_and_sleep

TESTS = Path(__file__).parent

attempts_seen: list[int] = []


async def broken(order_id: int, retry: Retry = Retry(attempts=2)) -> None:
    attempts_seen.append(retry.attempt)
    raise ValueError(f"order {order_id} is cursed")


async def run_all(shadow: Shadow) -> None:
    async with Worker(shadow) as worker:
        await worker.run_until_finished()


async def test_a_task_that_exhausted_its_retries_is_kept_with_its_traceback(
    shadow: Shadow,
) -> None:
    await shadow.add(broken, key="order-13")(13)
    await run_all(shadow)
    letters = await shadow.failed()
    assert [letter.key for letter in letters] == ["order-13"]
    letter = letters[0]
    assert letter.function == "broken"
    assert letter.attempt == 2
    assert letter.reason == "failed"
    assert letter.error == "ValueError: order 13 is cursed"
    assert "Traceback (most recent call last)" in letter.traceback
    assert 'raise ValueError(f"order {order_id} is cursed")' in letter.traceback
    ttl = await shadow.client.pttl(shadow.keys.dead("order-13"))
    assert 0 < ttl <= shadow.dead_letter_ttl.total_seconds() * 1000
    # a retried attempt is not a dead letter; only the final failure is
    assert await shadow.task_state("order-13") == "failed"


async def test_a_dead_letter_can_be_retried_and_then_runs_again(shadow: Shadow) -> None:
    ran: list[int] = []
    fixed = False

    async def flaky(order_id: int) -> None:
        if not fixed:
            raise RuntimeError("not yet")
        ran.append(order_id)

    await shadow.add(flaky, key="order-7")(7)
    await run_all(shadow)
    assert [letter.key for letter in await shadow.failed()] == ["order-7"]

    fixed = True
    assert await shadow.retry_failed("order-7") == "queued"
    assert await shadow.failed() == []
    await run_all(shadow)
    assert ran == [7]
    with pytest.raises(KeyError):
        await shadow.retry_failed("order-7")


async def test_retrying_a_key_that_is_busy_keeps_the_dead_letter(shadow: Shadow) -> None:
    async def fails() -> None:
        raise RuntimeError("x")

    await shadow.add(fails, key="busy")()
    await run_all(shadow)
    await shadow.add(fails, key="busy", when=None)()  # the key is queued again
    assert await shadow.retry_failed("busy") == "exists"
    assert [letter.key for letter in await shadow.failed()] == ["busy"]


async def test_purge_one_or_all(shadow: Shadow) -> None:
    async def fails(n: int) -> None:
        raise RuntimeError(str(n))

    for n in range(3):
        await shadow.add(fails, key=f"p{n}")(n)
    await run_all(shadow)
    assert await shadow.purge_failed("p1") == 1
    assert await shadow.purge_failed("p1") == 0
    assert sorted(letter.key for letter in await shadow.failed()) == ["p0", "p2"]
    assert await shadow.purge_failed() == 2
    assert await shadow.failed() == []
    leftovers = [k async for k in shadow.client.scan_iter(match=f"{shadow.keys.prefix}dead:*")]
    assert leftovers == []


async def test_the_store_is_bounded(url: str, shadow_name: str) -> None:
    async with Shadow(name=shadow_name, url=url, dead_letter_limit=5) as shadow:

        async def fails(n: int) -> None:
            raise RuntimeError(str(n))

        for n in range(12):
            await shadow.add(fails, key=f"b{n:02}")(n)
        await run_all(shadow)
        letters = await shadow.failed()
        assert len(letters) == 5
        assert await shadow.client.zcard(shadow.keys.failed) == 5
        dead = [k async for k in shadow.client.scan_iter(match=f"{shadow.keys.prefix}dead:*")]
        assert len(dead) == 5
        await shadow.purge_failed()


async def test_a_message_that_keeps_killing_workers_becomes_poison(shadow: Shadow) -> None:
    ran: list[str] = []

    async def deadly() -> None:
        ran.append("ran")

    await shadow.add(deadly, key="deadly")()
    await shadow.ensure_group()
    # Six workers started it (READ, then START after each claim) and died without
    # acknowledging it.
    stream = shadow.keys.stream
    read = await shadow.client.xreadgroup(WORKER_GROUP, "dead-0", {stream: ">"}, count=1)
    [(message_id, _)] = entries_of(read)
    for n in range(6):
        if n:
            await shadow.client.xautoclaim(stream, WORKER_GROUP, f"dead-{n}", 0, "0-0", count=1)
        await shadow.scripts.start(
            keys=[stream, shadow.keys.run("deadly")],
            args=[WORKER_GROUP, f"dead-{n}", now_ms(), f"run-{n}", 1, 1, 1, message_id],
        )
    async with Worker(
        shadow, max_deliveries=5, redelivery_timeout=timedelta(milliseconds=100)
    ) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 10)
    assert ran == []
    letter = await shadow.failed_task("deadly")
    assert letter is not None
    assert letter.reason == "poison"
    assert "delivered 7 times without being acknowledged" in letter.error


def shadows_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return shadows_cli_in_process(*args, env={**env, "COLUMNS": "200"})


async def test_the_failed_commands(redis_url: str, shadow_name: str, tmp_path: Path) -> None:
    env = {"SHADOW_URL": redis_url, "SHADOW_NAME": shadow_name}
    runs = tmp_path / "runs"
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        await shadow.add(broken, key="cli-13")(13)
        await shadow.add(record_and_sleep, key="cli-ok")(str(runs), "ok", 0)
        await run_all(shadow)
        assert [letter.key for letter in await shadow.failed()] == ["cli-13"]

    listed = shadows_cli("failed", "ls", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "cli-13" in listed.stdout
    assert "ValueError: order 13 is cursed" in listed.stdout

    as_json = shadows_cli("failed", "ls", "--json", env=env)
    documents = json.loads(as_json.stdout)
    assert [d["key"] for d in documents] == ["cli-13"]
    assert documents[0]["attempt"] == 2
    assert documents[0]["reason"] == "failed"

    shown = shadows_cli("failed", "show", "cli-13", env=env)
    assert shown.returncode == 0
    assert "Traceback (most recent call last)" in shown.stdout

    detail = json.loads(shadows_cli("failed", "show", "cli-13", "--json", env=env).stdout)
    assert detail["fields"]["function"] == "broken"
    assert "is cursed" in detail["traceback"]

    missing = shadows_cli("failed", "show", "nope", env=env)
    assert missing.returncode == 1
    assert (
        missing.stderr.strip() == f"Error: no failed task with key 'nope' on shadow '{shadow_name}'"
    )

    retried = shadows_cli("failed", "retry", "cli-13", env=env)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == "cli-13: queued"
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        shadow.register(broken)  # a worker that knows the task (an unknown one is handed back)
        assert await shadow.task_state("cli-13") == "queued"
        await run_all(shadow)  # fails again, for good
        assert len(await shadow.failed()) == 1

    both = shadows_cli("failed", "retry", "cli-13", "--all", env=env)
    assert both.returncode == 1
    assert both.stderr.strip() == "Error: give a task key or --all (one of them)"
    neither = shadows_cli("failed", "purge", env=env)
    assert neither.returncode == 1

    purged = shadows_cli("failed", "purge", "--all", env=env)
    assert purged.returncode == 0
    assert purged.stdout.strip() == "purged 1 failed task(s)"
    empty = shadows_cli("failed", "ls", env=env)
    assert "No failed tasks" in empty.stdout
    assert read_records(runs)  # the healthy task ran normally


async def test_the_failed_commands_show_calls_of_the_tasks_given(
    redis_url: str, shadow_name: str
) -> None:
    env = {"SHADOW_URL": redis_url, "SHADOW_NAME": shadow_name}
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        try:
            await shadow.add(pay, key="refused-1")("refused-1", "4111 1111", ["a", "b", "c"])
            await run_all(shadow)
            assert [letter.key for letter in await shadow.failed()] == ["refused-1"]

            plain = json.loads(shadows_cli("failed", "ls", "--json", env=env).stdout)
            assert "call" not in plain[0]

            call = "pay('refused-1', ..., [len 3])"
            listed = shadows_cli("failed", "ls", "--tasks", "worker_tasks:payments", env=env)
            assert listed.returncode == 0, listed.stderr
            assert call in listed.stdout
            with_tasks = {**env, "SHADOW_TASKS": "worker_tasks:payments"}
            [document] = json.loads(shadows_cli("failed", "ls", "--json", env=with_tasks).stdout)
            assert document["call"] == call

            shown = shadows_cli("failed", "show", "refused-1", env=with_tasks)
            assert shown.returncode == 0, shown.stderr
            assert f"call: {call}" in shown.stdout
            detail = json.loads(
                shadows_cli("failed", "show", "refused-1", "--json", env=with_tasks).stdout
            )
            assert detail["call"] == call
            assert "4111" not in listed.stdout + shown.stdout + json.dumps(document)
        finally:
            await shadow.purge_failed()
            await shadow.client.delete(shadow.keys.run("refused-1"))


async def test_retry_all_goes_on_past_bad_letters_and_reports_them(
    redis_url: str, shadow_name: str
) -> None:
    """A signing shadow with three letters: a genuine failure, a forged message its worker
    refused, and a malformed letter. ``--all`` retries what it may, names each letter it
    could not retry, and exits 1; ``--force-unverified`` re-signs the forged one, logged."""
    key = "cli-signing-key"
    env = {"SHADOW_URL": redis_url, "SHADOW_NAME": shadow_name, "SHADOW_SIGNING_KEY": key}
    async with Shadow(name=shadow_name, url=redis_url) as intruder:
        await intruder.add(broken, key="forged")(666)
    async with Shadow(name=shadow_name, url=redis_url, signing_key=key) as shadow:
        await shadow.add(broken, key="genuine")(13)
        shadow.register(broken)
        await run_all(shadow)
        await shadow.client.hset(shadow.keys.dead("mangled"), mapping={"reason": "failed"})
        await shadow.client.zadd(shadow.keys.failed, {"mangled": time.time() * 1000})
        assert {letter.key for letter in await shadow.failed()} == {"forged", "genuine", "mangled"}

    every = shadows_cli("failed", "retry", "--all", env=env)
    assert every.returncode == 1, every.stdout + every.stderr
    lines = sorted(every.stdout.splitlines())
    assert lines[0].startswith("forged: not retried: the failed task 'forged' has no valid")
    assert "unsigned message refused" in lines[0]
    assert lines[1] == "genuine: queued"
    assert lines[2].startswith("mangled: not retried: cannot retry a malformed message")
    assert every.stderr.strip() == "Error: 2 of 3 failed tasks could not be retried (see above)"

    one = shadows_cli("failed", "retry", "forged", env=env)
    assert one.returncode == 1
    assert one.stderr.startswith("Error: the failed task 'forged' has no valid signature")

    forced = shadows_cli("failed", "retry", "forged", "--force-unverified", env=env)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == "forged: queued"
    assert "Re-signing the failed task broken [key=forged]" in forced.stderr

    async with Shadow(name=shadow_name, url=redis_url, signing_key=key) as shadow:
        assert await shadow.task_state("genuine") == "queued"
        assert await shadow.task_state("forged") == "queued"
        assert [letter.key for letter in await shadow.failed()] == ["mangled"]
        await shadow.clear()
        await shadow.purge_failed()

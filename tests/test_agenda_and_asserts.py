"""``Agenda`` (scatter) and the assertions of ``shadows.testing``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shadows import Agenda, Debounce, Shadow, Worker
from shadows.testing import (
    assert_no_tasks,
    assert_task_count,
    assert_task_not_scheduled,
    assert_task_scheduled,
)

HOUR = timedelta(hours=1)


async def test_scatter_spreads_the_calls_evenly_under_stable_keys(shadow: Shadow) -> None:
    async def sync_account(account_id: int, full: bool = False) -> None: ...

    shadow.register(sync_account)
    agenda = Agenda("nightly")
    for account in range(6):
        agenda.add(sync_account)(account, full=account == 0)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    executions = await agenda.scatter(shadow, over=HOUR, start=start)
    assert [e.when - start for e in executions] == [HOUR * i / 6 for i in range(6)]
    snapshot = await shadow.snapshot()
    assert sorted(task.key for task in snapshot.future) == sorted(e.key for e in executions)
    assert {task.when for task in snapshot.future} == {e.when for e in executions}

    # the same agenda again (here rebuilt, as another process would): nothing doubles
    again = Agenda("nightly")
    for account in range(6):
        again.add(sync_account)(account, full=account == 0)
    later = await again.scatter(shadow, over=HOUR, start=start + timedelta(minutes=5))
    assert [e.key for e in later] == [e.key for e in executions]
    await assert_task_count(shadow, 6, sync_account)


async def test_scatter_with_jitter_stays_in_the_window_and_is_stable(shadow: Shadow) -> None:
    async def ping(n: int) -> None: ...

    shadow.register(ping)
    start = datetime(2030, 1, 1, tzinfo=UTC)

    def build() -> Agenda:
        agenda = Agenda("pings")
        for n in range(50):
            agenda.add(ping)(n)
        return agenda

    first = await build().scatter(shadow, over=HOUR, jitter=timedelta(minutes=5), start=start)
    assert all(start <= e.when <= start + HOUR for e in first)
    spaced = [start + HOUR * i / 50 for i in range(50)]
    assert any(e.when != when for e, when in zip(first, spaced, strict=True))
    assert all(
        abs(e.when - when) <= timedelta(minutes=5) for e, when in zip(first, spaced, strict=True)
    )
    second = await build().scatter(shadow, over=HOUR, jitter=timedelta(minutes=5), start=start)
    assert [e.when for e in second] == [e.when for e in first]


async def test_scattered_calls_run(shadow: Shadow) -> None:
    done: list[int] = []

    async def work(n: int) -> None:
        done.append(n)

    agenda = Agenda()
    for n in range(5):
        agenda.add(work)(n)
    await agenda.scatter(shadow, over=timedelta(milliseconds=100))
    async with Worker(shadow, scheduling_resolution=timedelta(milliseconds=10)) as worker:
        await worker.run_until_finished()
    assert sorted(done) == [0, 1, 2, 3, 4]


async def test_scatter_checks_every_call_before_writing_any(shadow: Shadow) -> None:
    async def work(n: int) -> None: ...

    agenda = Agenda()
    agenda.add(work)(1)
    agenda.add(work)(1, 2)  # one argument too many
    with pytest.raises(TypeError, match="too many positional arguments"):
        await agenda.scatter(shadow, over=HOUR)
    await assert_no_tasks(shadow)
    with pytest.raises(ValueError, match="over must be"):
        await agenda.scatter(shadow, over=-HOUR)
    with pytest.raises(ValueError, match="name must be"):
        Agenda("two words")


async def test_the_assertions_pass_and_fail_with_what_is_scheduled(shadow: Shadow) -> None:
    async def send_email(customer_id: int, template: str = "welcome") -> None: ...

    async def other() -> None: ...

    await assert_no_tasks(shadow)
    await shadow.add(send_email, when=datetime.now(UTC) + HOUR, key="mail-1")(1)
    await shadow.add(send_email)(2, template="reminder")
    await shadow.add(other)()

    found = await assert_task_scheduled(shadow, send_email, 1)
    assert found.key == "mail-1"
    await assert_task_scheduled(shadow, send_email, customer_id=1, template="welcome")
    await assert_task_scheduled(shadow, "send_email")
    await assert_task_scheduled(shadow, send_email, template="reminder")
    await assert_task_not_scheduled(shadow, send_email, 3)
    await assert_task_count(shadow, 3)
    await assert_task_count(shadow, 2, send_email)
    await assert_task_count(shadow, 1, other)
    await assert_task_count(shadow, 2, fn_or_name="send_email")

    with pytest.raises(AssertionError) as failure:
        await assert_task_scheduled(shadow, send_email, 3)
    message = str(failure.value)
    assert message.startswith("send_email(3) is not scheduled; scheduled calls of")
    assert "send_email(1) [key=mail-1, scheduled, due" in message
    assert "template='reminder'" in message

    with pytest.raises(
        AssertionError, match=r"send_email\(1\) is scheduled \(1\): send_email\(1\) \[key=mail-1"
    ):
        await assert_task_not_scheduled(shadow, send_email, 1)
    with pytest.raises(AssertionError, match="expected 5 tasks scheduled, found 3"):
        await assert_task_count(shadow, 5)
    with pytest.raises(
        AssertionError,
        match=r"expected 1 tasks of send_email scheduled, found 2; scheduled \(2\): send_email",
    ):
        await assert_task_count(shadow, 1, send_email)
    with pytest.raises(AssertionError, match=r"expected no tasks scheduled; scheduled \(3\)"):
        await assert_no_tasks(shadow)
    with pytest.raises(
        AssertionError, match=r"never_added is not scheduled; scheduled instead \(3\)"
    ):
        await assert_task_scheduled(shadow, "never_added")


async def test_a_debounced_burst_is_one_scheduled_task(shadow: Shadow) -> None:
    async def reindex(n: int, debounce: Debounce = Debounce(HOUR)) -> None: ...

    for n in range(4):
        await shadow.add(reindex)(n)
    await assert_task_count(shadow, 1, reindex)
    await assert_task_scheduled(shadow, reindex, 3)
    await assert_task_not_scheduled(shadow, reindex, 0)

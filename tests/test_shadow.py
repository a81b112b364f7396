"""The producer: scheduling, keys, replace, cancel, clear and input validation."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shadows import Execution, Retry, Shadow, UnknownTaskError
from shadows.core.execution import to_ms


async def noop(value: int) -> None:
    pass


async def greet(name: str, punctuation: str = "!") -> None:
    pass


def soon(seconds: float = 60) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def state_of(shadow: Shadow, key: str) -> str | None:
    value = await shadow.client.hget(shadow.keys.run(key), "state")
    return value.decode() if value else None


async def test_immediate_task_goes_on_the_stream(shadow: Shadow) -> None:
    execution = await shadow.add(noop)(1)
    assert isinstance(execution, Execution)
    assert execution.attempt == 1
    assert execution.args == (1,)
    assert execution.function is noop
    assert await shadow.client.xlen(shadow.keys.stream) == 1
    assert await shadow.client.zcard(shadow.keys.queue) == 0
    assert await state_of(shadow, execution.key) == "queued"


async def test_future_task_waits_in_the_queue(shadow: Shadow) -> None:
    when = soon()
    execution = await shadow.add(noop, when=when)(1)
    assert execution.when == when
    assert await shadow.client.xlen(shadow.keys.stream) == 0
    assert await shadow.client.zscore(shadow.keys.queue, execution.key) == to_ms(when)
    assert await state_of(shadow, execution.key) == "scheduled"
    parked = await shadow.client.hgetall(shadow.keys.parked(execution.key))
    assert parked[b"function"] == b"noop"


async def test_past_when_means_now(shadow: Shadow) -> None:
    await shadow.add(noop, when=datetime.now(UTC) - timedelta(hours=1))(1)
    assert await shadow.client.xlen(shadow.keys.stream) == 1


async def test_default_keys_are_unique(shadow: Shadow) -> None:
    first = await shadow.add(noop)(1)
    second = await shadow.add(noop)(1)
    assert first.key != second.key
    assert await shadow.client.xlen(shadow.keys.stream) == 2


async def test_custom_key_makes_add_idempotent(shadow: Shadow) -> None:
    await shadow.add(noop, key="order-1")(1)
    await shadow.add(noop, key="order-1")(2)
    assert await shadow.client.xlen(shadow.keys.stream) == 1

    await shadow.add(noop, when=soon(), key="later")(1)
    await shadow.add(noop, when=soon(120), key="later")(2)
    assert await shadow.client.zcard(shadow.keys.queue) == 1
    parked = await shadow.client.hgetall(shadow.keys.parked("later"))
    assert shadow.codec.loads(parked[b"args"]) == (1,)


async def test_replace_moves_a_future_task_and_swaps_its_arguments(shadow: Shadow) -> None:
    await shadow.add(noop, when=soon(60), key="reminder")(1)
    later = soon(600)
    await shadow.replace(noop, when=later, key="reminder")(2)
    assert await shadow.client.zcard(shadow.keys.queue) == 1
    assert await shadow.client.zscore(shadow.keys.queue, "reminder") == to_ms(later)
    parked = await shadow.client.hgetall(shadow.keys.parked("reminder"))
    assert shadow.codec.loads(parked[b"args"]) == (2,)


async def test_replace_of_an_absent_key_schedules_it(shadow: Shadow) -> None:
    await shadow.replace(noop, when=soon(), key="fresh")(5)
    assert await state_of(shadow, "fresh") == "scheduled"


async def test_replace_future_with_now_moves_it_to_the_stream(shadow: Shadow) -> None:
    await shadow.add(noop, when=soon(), key="k")(1)
    await shadow.replace(noop, when=None, key="k")(2)
    assert await shadow.client.zcard(shadow.keys.queue) == 0
    entries = await shadow.client.xrange(shadow.keys.stream)
    assert len(entries) == 1
    assert shadow.codec.loads(entries[0][1][b"args"]) == (2,)


async def test_replace_of_a_queued_task_not_yet_delivered_swaps_it(shadow: Shadow) -> None:
    await shadow.add(noop, key="k")(1)
    await shadow.replace(noop, when=soon(), key="k")(2)
    assert await shadow.client.xlen(shadow.keys.stream) == 0
    assert await state_of(shadow, "k") == "scheduled"


async def test_cancel_removes_a_future_task(shadow: Shadow) -> None:
    await shadow.add(noop, when=soon(), key="reminder")(1)
    assert await shadow.cancel("reminder") is True
    assert await shadow.client.zcard(shadow.keys.queue) == 0
    assert not await shadow.client.exists(shadow.keys.parked("reminder"))
    assert await state_of(shadow, "reminder") == "cancelled"  # kept for execution_ttl
    # cancelled keys are free again
    await shadow.add(noop, when=soon(), key="reminder")(2)
    assert await state_of(shadow, "reminder") == "scheduled"


async def test_cancel_removes_ready_work_not_yet_delivered(shadow: Shadow) -> None:
    await shadow.add(noop, key="now")(1)
    assert await shadow.cancel("now") is True
    assert await shadow.client.xlen(shadow.keys.stream) == 0
    assert await state_of(shadow, "now") == "cancelled"
    assert await shadow.cancel("now") is False  # already ended
    assert await shadow.cancel("never-existed") is False


async def test_add_by_registered_name(shadow: Shadow) -> None:
    shadow.register(greet)
    execution = await shadow.add("greet")("Ada", punctuation="?")
    assert execution.function is greet
    assert execution.kwargs == {"punctuation": "?"}


async def test_unknown_task_name_is_a_clear_error(shadow: Shadow) -> None:
    with pytest.raises(UnknownTaskError, match="Unknown task 'nope'"):
        shadow.add("nope")


async def test_an_unknown_task_name_is_a_key_error_with_a_readable_message(
    shadow: Shadow,
) -> None:
    for schedule in (shadow.add, lambda name: shadow.replace(name, None, key="k")):
        with pytest.raises(KeyError) as caught:
            schedule("nope")
        assert isinstance(caught.value, UnknownTaskError)
        assert isinstance(caught.value, LookupError)
        assert str(caught.value) == (
            f"Unknown task 'nope' on shadow {shadow.name!r} (registered: fail, sleep, trace)"
        )


async def test_naive_when_is_rejected(shadow: Shadow) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        shadow.add(noop, when=datetime.now())


async def test_non_datetime_when_is_rejected(shadow: Shadow) -> None:
    with pytest.raises(TypeError, match="when must be a timezone-aware datetime"):
        shadow.add(noop, when="tomorrow")  # type: ignore[call-overload]


async def test_empty_key_is_rejected(shadow: Shadow) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        shadow.add(noop, key="")


async def test_wrong_arguments_are_rejected_before_scheduling(shadow: Shadow) -> None:
    with pytest.raises(TypeError, match=r"noop\(\)"):
        await shadow.add(noop)(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await shadow.add(noop)(wrong=1)  # type: ignore[call-arg]
    assert await shadow.client.xlen(shadow.keys.stream) == 0


async def test_clear_removes_scheduled_and_queued_work(shadow: Shadow) -> None:
    for i in range(3):
        await shadow.add(noop)(i)
    for i in range(4):
        await shadow.add(noop, when=soon(), key=f"f{i}")(i)
    assert await shadow.clear() == 7
    assert await shadow.client.xlen(shadow.keys.stream) == 0
    assert await shadow.client.zcard(shadow.keys.queue) == 0
    assert await shadow.clear() == 0
    # nothing of the cleared tasks is left behind
    leftovers = [k async for k in shadow.client.scan_iter(match=f"{shadow.keys.prefix}*")]
    assert sorted(leftovers) == sorted([shadow.keys.stream.encode(), shadow.keys.layout.encode()])


async def test_every_key_shares_the_hash_tag(shadow: Shadow) -> None:
    await shadow.add(noop)(1)
    await shadow.add(noop, when=soon(), key="f")(1)
    await shadow.ensure_group()
    keys = [k.decode() async for k in shadow.client.scan_iter(match="*")]
    ours = [k for k in keys if shadow.name in k]
    assert ours
    assert all(k.startswith(f"{{{shadow.name}}}:") for k in ours)


async def test_register_collection(shadow: Shadow) -> None:
    shadow.register_collection("shadows.tasks:standard_tasks")
    assert {"trace", "fail", "sleep"} <= set(shadow.tasks)
    with pytest.raises(ValueError, match="module:attribute"):
        shadow.register_collection("no-colon")
    with pytest.raises(ValueError, match="Cannot import"):
        shadow.register_collection("no_such_module_here:tasks")
    with pytest.raises(ValueError, match="has no attribute"):
        shadow.register_collection("shadows.tasks:nothing")


async def test_builtin_tasks_are_registered_by_default(shadow: Shadow) -> None:
    assert {"trace", "fail", "sleep"} <= set(shadow.tasks)


async def test_a_shadow_connects_on_first_use_and_again_after_closing() -> None:
    shadow = Shadow(name="lazy", url="memory://lazy")  # no connection yet
    await shadow.add(noop, key="one")(1)
    assert await shadow.task_state("one") == "queued"
    await shadow.aclose()
    assert await shadow.task_state("one") == "queued"  # reopened, same memory:// server
    async with shadow:
        assert await shadow.task_state("one") == "queued"


async def test_redis_gives_the_client(shadow: Shadow) -> None:
    async with shadow.redis() as client:
        assert await client.ping()


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost",
        "",
        "localhost:6379",
        "redis://host:notaport",
        "redis://host:6379/notadb",
        "redis://:6379",
        "redis://host:99999",
        "unix://",
    ],
)
def test_malformed_urls_are_rejected_at_construction(url: str) -> None:
    with pytest.raises(ValueError, match="Invalid shadow URL"):
        Shadow(url=url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://:secret@example.com:6380/2",
        "unix:///var/run/redis.sock?db=1",
        "valkey://localhost",
        "valkeys://user:pw@localhost:6380/1",
        "memory://",
        "memory://named",
    ],
)
def test_supported_urls_are_accepted(url: str) -> None:
    Shadow(url=url)


def test_valkey_schemes_speak_redis() -> None:
    assert Shadow(url="valkey://h:1/2").url == "redis://h:1/2"
    assert Shadow(url="valkeys://h:1/2").url == "rediss://h:1/2"


@pytest.mark.parametrize("name", ["", "with space", "{braces}", "x" * 201])
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="Invalid shadow name"):
        Shadow(name=name, url="memory://")


def test_name_and_url_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHADOW_NAME", "from-env")
    monkeypatch.setenv("SHADOW_URL", "memory://env")
    shadow = Shadow()
    assert (shadow.name, shadow.url) == ("from-env", "memory://env")
    monkeypatch.delenv("SHADOW_NAME")
    monkeypatch.delenv("SHADOW_URL")
    shadow = Shadow()
    assert (shadow.name, shadow.url) == ("shadows", "redis://localhost:6379/0")


async def _two_and_a_default(a: int, b: int, c: int = 3) -> None: ...


async def _with_a_dependency(a: int, retry: Retry = Retry(attempts=2)) -> None: ...


async def _positional_only(a: int, /, b: int = 2) -> None: ...


async def _star_args(a: int, *rest: int) -> None: ...


async def _keyword_only(a: int, *, b: int = 2) -> None: ...


@pytest.mark.parametrize(
    "function",
    [_two_and_a_default, _with_a_dependency, _positional_only, _star_args, _keyword_only],
)
async def test_argument_checks_agree_with_the_signature(shadow: Shadow, function: Any) -> None:
    """Calls of plain signatures are checked by counting: the verdict must be bind's."""
    signature = inspect.signature(function)
    call = shadow.caller(function, None, None)
    for count in range(6):
        args = tuple(range(count))
        try:
            signature.bind(*args)
            binds = True
        except TypeError:
            binds = False
        if binds:
            assert call(*args).args == args
        else:
            with pytest.raises(TypeError, match=function.__name__):
                call(*args)

"""Bad input never blocks the queue and never goes unseen; property-based checks of the
parsers and renderers that see user input."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadows import Logged, Shadow, Worker
from shadows.core.annotations import render_call
from shadows.core.durations import format_duration, parse_duration
from shadows.core.execution import Message, now_ms

ran: list[Any] = []


async def fine(n: int) -> None:
    ran.append(n)


@pytest.fixture(autouse=True)
def clear_ran() -> None:
    ran.clear()


async def inject(shadow: Shadow, message: Message) -> None:
    """Put a message on the stream as a producer that skipped our checks would."""
    shadow.payloads.seal(message)
    await shadow.schedule_message(message)


async def run_all(shadow: Shadow) -> None:
    async with Worker(shadow) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 30)


async def test_a_wrong_argument_count_fails_visibly_and_does_not_block(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    shadow.register(fine)
    args, kwargs = shadow.payloads.encode((1, 2, 3), {})
    await inject(shadow, Message("too-many", "fine", now_ms(), 1, args, kwargs))
    await shadow.add(fine)(7)
    with caplog.at_level(logging.ERROR, logger="shadows"):
        await run_all(shadow)
    assert ran == [7]
    letter = await shadow.failed_task("too-many")
    assert letter is not None
    assert letter.reason == "bad-arguments"
    assert letter.error == "too many positional arguments"
    assert "Wrong arguments for fine [key=too-many attempt=1]" in caplog.text


async def test_truncated_arguments_are_dead_lettered(shadow: Shadow) -> None:
    shadow.register(fine)
    args, kwargs = shadow.payloads.encode((1,), {})
    await inject(shadow, Message("truncated", "fine", now_ms(), 1, args[: len(args) // 2], kwargs))
    await shadow.add(fine)(8)
    await run_all(shadow)
    assert ran == [8]
    letter = await shadow.failed_task("truncated")
    assert letter is not None
    assert letter.reason == "undecodable"


async def test_arguments_of_the_wrong_shape_are_dead_lettered(shadow: Shadow) -> None:
    shadow.register(fine)
    codec = shadow.codec
    await inject(
        shadow, Message("shape", "fine", now_ms(), 1, codec.dumps("a string"), codec.dumps({}))
    )
    await run_all(shadow)
    letter = await shadow.failed_task("shape")
    assert letter is not None
    assert "arguments must decode to a sequence and a mapping" in letter.error


async def test_a_huge_argument_goes_through_without_blocking_others(shadow: Shadow) -> None:
    sizes: list[int] = []

    async def big(blob: bytes) -> None:
        sizes.append(len(blob))

    await shadow.add(big)(b"x" * (16 * 1024 * 1024))
    for n in range(3):
        await shadow.add(fine)(n)
    await run_all(shadow)
    assert sizes == [16 * 1024 * 1024]
    assert sorted(ran) == [0, 1, 2]


async def test_a_corrupted_queue_entry_is_skipped(shadow: Shadow) -> None:
    """A future task whose parked payload vanished is dropped by the scheduler."""
    from datetime import datetime, timezone

    when = datetime.now(timezone.utc) + timedelta(milliseconds=50)
    execution = await shadow.add(fine, when=when, key="vanishing")(1)
    await shadow.client.delete(shadow.keys.parked(execution.key))
    await shadow.add(fine)(2)
    async with Worker(shadow, scheduling_resolution=timedelta(milliseconds=10)) as worker:
        await asyncio.wait_for(worker.run_until_finished(), 10)
    assert ran == [2]
    assert await shadow.client.zcard(shadow.keys.queue) == 0


# -- property-based checks ------------------------------------------------------------


async def documented(
    shown: Annotated[Any, Logged],
    sized: Annotated[Any, Logged(length_only=True)],
    hidden: Any = None,
) -> None:
    pass


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(shown=values, sized=values, hidden=values)
@settings(max_examples=200, deadline=None)
def test_rendering_any_arguments_never_fails_nor_leaks(shown: Any, sized: Any, hidden: Any) -> None:
    rendered = render_call(documented, (shown, sized), {"hidden": hidden})
    assert rendered.startswith("documented(")
    assert rendered.endswith("hidden=...)")
    assert len(rendered) < 1000


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3000)))
def test_formatted_durations_parse_back(value: timedelta) -> None:
    text = format_duration(value)
    assert abs(parse_duration(text) - value) <= timedelta(milliseconds=1)


@given(st.text(max_size=30))
def test_parsing_any_text_either_works_or_says_why(text: str) -> None:
    try:
        parsed = parse_duration(text)
    except ValueError as error:
        message = str(error)
    else:
        message = "invalid duration" if parsed < timedelta(0) else ""
    assert message == "" or message.startswith("invalid duration")


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10_000), st.sampled_from(["ms", "s", "m", "h"])
        ),
        min_size=1,
        max_size=4,
    )
)
def test_compound_durations_add_up(parts: list[tuple[int, str]]) -> None:
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    text = "".join(f"{amount}{suffix}" for amount, suffix in parts)
    expected = sum(amount * unit[suffix] for amount, suffix in parts)
    assert parse_duration(text).total_seconds() == pytest.approx(expected)

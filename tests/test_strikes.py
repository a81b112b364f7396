"""Strikes: the values and their matching, the state in Redis, the workers that honour them,
and the command line."""

from __future__ import annotations

import ast
import asyncio
import base64
import enum
import json
import logging
import math
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import wait_for
from processes import spawn_worker
from redis_server import RedisProcess
from shadows import CurrentWorker, Perpetual, Retry, Shadow, Strike, Worker
from shadows.behaviours import plan_for
from shadows.core.serialization import JSONCodec, Payloads, PickleCodec
from shadows.operations.strikes import (
    OPERATORS,
    StrikeList,
    flatten_arguments,
    parse_operator,
    parse_value,
)
from test_cli import assert_one_line_error, shadows_cli_in_process
from worker_tasks import read_records, record_and_sleep

PAYLOADS = Payloads(PickleCodec())


# -- values on the command line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("-5", -5),
        ("1.5", 1.5),
        ("1_000", 1000),
        ("None", None),
        ("True", True),
        ('"x"', "x"),
        ("'42'", "42"),
        ("[1, 'a']", [1, "a"]),
        ("(1, 2)", (1, 2)),
        ("{'a': 1}", {"a": 1}),
        ("b'raw'", b"raw"),
        ("x", "x"),
        ("abc-123", "abc-123"),
        ("2024-01-31", "2024-01-31"),
        ("null", "null"),
        ("hello world", "hello world"),
        ("", ""),
    ],
)
def test_values_are_literals_else_plain_strings(text: str, value: Any) -> None:
    parsed = parse_value(text)
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize("text", ['"unterminated', "[1, 2", "{'a':", "(1,", "'x' + 'y'"])
def test_values_that_open_like_a_literal_but_do_not_parse_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match="cannot parse the value"):
        parse_value(text)


literals = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=4)
    ),
    max_leaves=12,
)


def identical(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        # Key order is not part of a dict's value (the canonical JSON sorts keys).
        return a.keys() == b.keys() and all(
            identical(k, next(j for j in b if j == k)) and identical(a[k], b[k]) for k in a
        )
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@given(literals)
def test_the_repr_of_any_literal_parses_back_to_it(value: Any) -> None:
    assert identical(parse_value(repr(value)), value)


@given(st.text())
def test_any_text_parses_or_fails_with_one_clear_error(text: str) -> None:
    opens_a_literal = text.strip()[:1] in ("'", '"', "[", "{", "(")
    try:
        value = parse_value(text)
    except ValueError:
        assert opens_a_literal
        with pytest.raises(ValueError, match="cannot parse the value"):
            parse_value(text)
        return
    try:
        literal = ast.literal_eval(text)
    except Exception:
        assert value == text
    else:
        assert identical(value, literal)


def test_operators_by_symbol_or_word() -> None:
    for symbol in OPERATORS:
        assert parse_operator(symbol) == symbol
    assert [parse_operator(w) for w in ("eq", "NE", "lt", "le", "gt", "ge")] == [
        "==", "!=", "<", "<=", ">", ">=",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown operator '=~': use one of ==, !=, <"):
        parse_operator("=~")


# -- the Strike value -------------------------------------------------------------------


def test_a_strike_needs_a_task_or_a_parameter() -> None:
    with pytest.raises(ValueError, match="needs a task, a parameter, or both"):
        Strike()
    with pytest.raises(ValueError, match="unknown operator"):
        Strike("f", "x", "=>", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="takes no operator or value"):
        Strike("f", value=3)
    with pytest.raises(ValueError, match="unknown operator 'None'"):
        Strike("f", "x", None, 1)  # type: ignore[arg-type]
    assert Strike("f", "x", "ge", 1).operator == ">="  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty name"):
        Strike("")


EXPECTED = {
    "==": {2},
    "!=": {1, 3, "a", None},
    "<": {1},
    "<=": {1, 2},
    ">": {3},
    ">=": {2, 3},
}
VALUES: list[Any] = [1, 2, 3, "a", None]


@pytest.mark.parametrize("operator", list(EXPECTED))
def test_matching_compares_argument_with_value_and_type_errors_do_not_match(
    operator: str,
) -> None:
    strike = Strike("order", "customer", operator, 2)  # type: ignore[arg-type]
    matched = {v for v in VALUES if strike.matches("order", {"customer": v})}
    assert matched == EXPECTED[operator]
    assert not strike.matches("other", {"customer": 2})
    assert not strike.matches("order", {"client": 2})


def test_whole_task_and_every_task_strikes() -> None:
    whole = Strike("order")
    assert whole.whole_task
    assert whole.matches("order", {}) and not whole.matches("other", {})
    every = Strike(None, "customer", "==", 7)
    assert every.matches("order", {"customer": 7}) and every.matches("other", {"customer": 7})
    assert not every.matches("other", {"client": 7})
    assert str(whole) == "order"
    assert str(every) == "*(customer == 7)"
    assert str(Strike("order", "name", "!=", "x")) == "order(name != 'x')"


class Colour(enum.Enum):
    RED = "red"


ROUND_TRIPS: list[Any] = [
    None, True, 0, -7, 2**70, 1.5, -0.0, "text", "ünï", [1, "a", None], {"b": 1, "a": [2]},
    (1, 2), {1, 2}, b"\x00bytes", 1 + 2j, float("inf"),
    datetime(2024, 5, 1, 12, 30, tzinfo=UTC), uuid.UUID(int=42), Decimal("10.50"), Colour.RED,
]  # fmt: skip


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=repr)
def test_encoding_keeps_the_value_and_its_type(value: Any) -> None:
    strike = Strike("order", "customer", "==", value)
    back = Strike.decode(strike.encode(PAYLOADS), PAYLOADS)
    assert back == strike
    assert type(back.value) is type(value)
    assert back.encode(PAYLOADS) == strike.encode(PAYLOADS)


def test_json_values_travel_as_json_and_the_encoding_is_canonical() -> None:
    first = Strike(None, "filter", ">=", {"b": 1, "a": [1, 2.5]}).encode(PAYLOADS)
    second = Strike(None, "filter", ">=", {"a": [1, 2.5], "b": 1}).encode(PAYLOADS)
    assert first == second
    assert json.loads(first)["value"] == {"a": [1, 2.5], "b": 1}
    assert "literal" in json.loads(Strike("f", "x", "==", (1, 2)).encode(PAYLOADS))
    assert (
        json.loads(Strike("f", "x", "==", uuid.UUID(int=1)).encode(PAYLOADS))["codec"] == "pickle"
    )


@given(literals)
@settings(max_examples=200)
def test_any_literal_strike_round_trips(value: Any) -> None:
    strike = Strike("order", "customer", "==", value)
    back = Strike.decode(strike.encode(PAYLOADS), PAYLOADS)
    assert identical(back.value, value)


def test_codec_values_follow_the_shadows_codec_and_signing_key() -> None:
    moment = datetime(2024, 5, 1, tzinfo=UTC)
    signed = Payloads(PickleCodec(), b"secret")
    text = Strike("f", "x", "<", moment).encode(signed)
    assert json.loads(text)["signature"]
    assert Strike.decode(text, signed).value == moment
    for reader, reason in [
        (Payloads(PickleCodec(), b"other"), "unsigned or signed with another key"),
        (Payloads(JSONCodec()), "stored with the pickle codec"),
    ]:
        with pytest.raises(ValueError, match=reason):
            Strike.decode(text, reader)
    unsigned = Strike("f", "x", "<", moment).encode(PAYLOADS)
    with pytest.raises(ValueError, match="unsigned"):
        Strike.decode(unsigned, signed)
    # JSON and literal values need no codec and no signature.
    for value in (7, "x", (1, 2), {1, 2}):
        assert Strike.decode(Strike("f", "x", "==", value).encode(PAYLOADS), signed).value == value
    with pytest.raises(ValueError, match="with the json codec"):
        Strike("f", "x", "<", moment).encode(Payloads(JSONCodec()))


def test_keyword_catch_alls_are_spread_out_for_matching() -> None:
    def task(order: int, **options: Any) -> None: ...

    signature = plan_for(task).signature
    flat = flatten_arguments({"order": 1, "options": {"customer": 7, "order": 9}}, signature)
    assert flat == {"order": 1, "customer": 7}


def test_a_strike_list_reports_changes_and_finds_the_first_match() -> None:
    strikes = StrikeList()
    assert not strikes.loaded and not strikes
    a, b = Strike("order"), Strike(None, "customer", ">", 5)
    added, removed = strikes.replace({"a": a, "b": b})
    assert strikes.loaded and len(strikes) == 2
    assert (added, removed) == ([a, b], [])
    assert strikes.task_strike("order") == a
    assert strikes.match("order", {"customer": 1}) == a
    assert strikes.match("refund", {"customer": 6}) == b
    assert strikes.match("refund", {"customer": 5}) is None
    assert strikes.replace({"b": b}) == ([], [a])
    assert list(strikes) == [b]


# -- the producer side ------------------------------------------------------------------


async def order(customer: Any, amount: float = 0.0) -> None:
    """Stands in for a real task in the producer-side tests."""


async def test_strike_restore_and_list(shadow: Shadow) -> None:
    assert await shadow.strikes() == []
    before = datetime.now(UTC) - timedelta(seconds=5)
    assert await shadow.strike(order) is True
    assert await shadow.strike("order") is False  # the same strike: idempotent
    assert await shadow.strike(order, "customer", "==", "x") is True
    assert await shadow.strike(None, "customer", ">=", 100) is True
    listed = await shadow.strikes()
    assert listed == [
        Strike("order"),
        Strike("order", "customer", "==", "x"),
        Strike(None, "customer", ">=", 100),
    ]
    assert all(s.since is not None and s.since >= before for s in listed)

    assert await shadow.restore(order, "customer", "==", "x") is True
    assert await shadow.restore(order, "customer", "==", "x") is False
    # Equal values name the same strike: 100.0 restores the strike on 100.
    assert await shadow.restore(None, "customer", ">=", 100.0) is True
    assert await shadow.strikes() == [Strike("order")]
    assert await shadow.restore("order") is True
    assert await shadow.strikes() == []


async def test_the_feed_of_changes_is_bounded(shadow: Shadow) -> None:
    from shadows.operations.strikes import FEED_LENGTH

    for i in range(FEED_LENGTH + 300):
        await shadow.strike(order, "customer", "==", i)
    assert len(await shadow.strikes()) == FEED_LENGTH + 300
    assert await shadow.client.xlen(shadow.keys.strikes) <= FEED_LENGTH + 200


async def test_strike_arguments_are_checked(shadow: Shadow) -> None:
    async def charge(customer_id: int, retry: Retry = Retry(attempts=2)) -> None: ...

    with pytest.raises(ValueError, match=r"charge\(\) has no parameter 'customer' "):
        await shadow.strike(charge, "customer", "==", 1)
    with pytest.raises(ValueError, match="'retry' is a dependency"):
        await shadow.strike(charge, "retry", "==", 1)
    shadow.register(charge)
    with pytest.raises(ValueError, match="has no parameter"):
        await shadow.strike("charge", "customer", "==", 1)
    # Names this producer does not know are taken on trust (workers may know them).
    assert await shadow.strike("elsewhere", "customer", "==", 1)
    with pytest.raises(TypeError, match="Strike a task function"):
        await shadow.strike(42, "customer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Cannot store the strike value"):
        await shadow.strike(None, "customer", "==", (lambda: (yield))())
    # Restoring never checks: whatever is in effect can be lifted.
    assert await shadow.restore(charge, "customer", "==", 1) is False


# -- workers ----------------------------------------------------------------------------


@asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[None]:
    """Run ``workers`` forever in the background, and stop them cleanly afterwards."""
    tasks = [asyncio.create_task(w.run_forever()) for w in workers]
    try:
        await wait_for(lambda: all(w.strikes.loaded for w in workers), 10, "workers to start")
        yield
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*tasks)


async def settled(shadow: Shadow, keys: list[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        states = [await shadow.task_state(key) for key in keys]
        return all(state in ("completed", "failed", "stricken") for state in states)

    return check


@pytest.mark.parametrize("operator", list(EXPECTED))
async def test_each_operator_stops_exactly_the_matching_calls_on_two_running_workers(
    shadow: Shadow, operator: str
) -> None:
    ran: list[tuple[str, Any]] = []

    async def charge(customer: Any) -> None:
        ran.append(("charge", customer))

    async def refund(customer: Any) -> None:
        ran.append(("refund", customer))

    async with Shadow(name=shadow.name, url=shadow.url) as other:
        for each in (shadow, other):
            each.register(charge)
            each.register(refund)
        first, second = Worker(shadow, concurrency=2), Worker(other, concurrency=2)
        async with first, second, running(first, second):
            struck = time.monotonic()
            await shadow.strike(charge, "customer", operator, 2)  # type: ignore[arg-type]
            await wait_for(
                lambda: len(first.strikes) == 1 and len(second.strikes) == 1,
                5,
                "the strike to reach both workers",
            )
            assert time.monotonic() - struck < 1.0

            keys = []
            for value in VALUES:
                keys.append((await shadow.add(charge)(value)).key)
                keys.append((await shadow.add(refund)(value)).key)
            await wait_for(await settled(shadow, keys), 10, "every call to settle")

        states = [await shadow.task_state(key) for key in keys]
    stricken = {v for v, s in zip(VALUES, states[::2], strict=True) if s == "stricken"}
    assert stricken == EXPECTED[operator]
    assert sorted(map(repr, ran)) == sorted(
        [repr(("charge", v)) for v in VALUES if v not in EXPECTED[operator]]
        + [repr(("refund", v)) for v in VALUES]
    )
    assert first.stricken["charge"] + second.stricken["charge"] == len(EXPECTED[operator])
    assert "refund" not in first.stricken + second.stricken


async def test_a_worker_started_after_the_strike_honours_it(shadow: Shadow) -> None:
    ran: list[Any] = []

    async def charge(customer: Any, amount: float) -> None:
        ran.append((customer, amount))

    await shadow.strike(charge, "amount", ">", 100)
    await shadow.strike(None, "customer", "==", "blocked")
    for customer, amount in [("a", 50), ("b", 150), ("blocked", 10), ("c", 100.0)]:
        await shadow.add(charge)(customer, amount)
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert sorted(ran) == [("a", 50), ("c", 100.0)]
    assert worker.stricken == {"charge": 2}


async def test_restoring_lets_later_matches_run_and_does_not_bring_back_stricken_ones(
    shadow: Shadow,
) -> None:
    ran: list[int] = []

    async def charge(customer: int) -> None:
        ran.append(customer)

    async with Worker(shadow) as worker, running(worker):
        await shadow.strike(charge)
        await wait_for(lambda: len(worker.strikes) == 1, 5, "the strike")
        gone = await shadow.add(charge)(1)
        await wait_for(await settled(shadow, [gone.key]), 5, "the stricken call")
        assert await shadow.task_state(gone.key) == "stricken"

        await shadow.restore(charge)
        await wait_for(lambda: len(worker.strikes) == 0, 5, "the restore")
        later = await shadow.add(charge)(2)
        await wait_for(await settled(shadow, [later.key]), 5, "the later call")
    assert ran == [2]
    assert await shadow.task_state(later.key) == "completed"


async def test_a_future_task_is_stopped_when_it_comes_due(shadow: Shadow) -> None:
    ran: list[int] = []

    async def remind(customer: int) -> None:
        ran.append(customer)

    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    future = await shadow.add(remind, when=soon)(1)
    untouched = await shadow.add(remind, when=soon)(2)
    await shadow.strike(remind, "customer", "==", 1)
    assert await shadow.task_state(future.key) == "scheduled"
    async with Worker(shadow, scheduling_resolution=timedelta(milliseconds=50)) as worker:
        await worker.run_until_finished()
    assert ran == [2]
    assert await shadow.task_state(future.key) == "stricken"
    assert await shadow.task_state(untouched.key) == "completed"


async def test_a_whole_task_strike_needs_neither_the_function_nor_its_arguments(
    shadow: Shadow,
) -> None:
    async def mystery(x: int) -> None: ...

    async with Shadow(name=shadow.name, url=shadow.url) as producer:
        added = await producer.add(mystery)(1)  # the worker's shadow does not know it
        await producer.strike("mystery")
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert await shadow.task_state(added.key) == "stricken"
    assert worker.stricken == {"mystery": 1}


async def test_a_stricken_perpetual_chain_stops_and_restore_does_not_restart_it(
    shadow: Shadow,
) -> None:
    runs: list[int] = []

    async def heartbeat(
        perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=5)),
        worker: Worker = CurrentWorker(),
    ) -> None:
        runs.append(len(runs) + 1)
        if len(runs) == 3:
            await shadow.strike(heartbeat)
            await wait_for(lambda: len(worker.strikes) == 1, 5, "the strike")

    await shadow.add(heartbeat, key="beat")()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
        assert runs == [1, 2, 3]
        assert await shadow.task_state("beat") == "stricken"
        assert await shadow.client.zcard(shadow.keys.queue) == 0

        await shadow.restore(heartbeat)
        await worker.run_until_finished()
    assert runs == [1, 2, 3]


async def test_a_stricken_retry_is_not_tried_again(shadow: Shadow) -> None:
    attempts: list[int] = []

    async def flaky(
        retry: Retry = Retry(attempts=5, delay=timedelta(milliseconds=10)),
        worker: Worker = CurrentWorker(),
    ) -> None:
        attempts.append(retry.attempt)
        if retry.attempt == 2:
            await shadow.strike(flaky)
            await wait_for(lambda: len(worker.strikes) == 1, 5, "the strike")
        raise RuntimeError("still broken")

    added = await shadow.add(flaky)()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert attempts == [1, 2]
    assert await shadow.task_state(added.key) == "stricken"


async def test_strikes_see_keyword_catch_alls_and_non_literal_values(shadow: Shadow) -> None:
    ran: list[Any] = []

    async def export(**options: Any) -> None:
        ran.append(options)

    async def expire(until: datetime) -> None:
        ran.append(until)

    cutoff = datetime(2024, 1, 1, tzinfo=UTC)
    await shadow.strike(export, "region", "==", "eu")
    await shadow.strike(expire, "until", "<", cutoff)
    await shadow.add(export)(region="eu")
    await shadow.add(export)(region="us")
    await shadow.add(expire)(cutoff - timedelta(days=1))
    await shadow.add(expire)(cutoff)
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert sorted(map(repr, ran)) == sorted(map(repr, [{"region": "us"}, cutoff]))
    assert worker.stricken == {"export": 1, "expire": 1}


async def test_stricken_calls_are_logged_with_task_key_and_strike(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    async def charge(customer: int) -> None: ...

    await shadow.strike(charge, "customer", "==", 7)
    added = await shadow.add(charge, key="charge-7")(7)
    with caplog.at_level(logging.INFO, logger="shadows"):
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
    assert await shadow.task_state(added.key) == "stricken"
    [line] = [r for r in caplog.records if getattr(r, "outcome", None) == "stricken"]
    assert line.levelno == logging.WARNING
    assert "charge(...) [key=charge-7 attempt=1] stricken by charge(customer == 7)" in (
        line.getMessage()
    )
    assert (line.task, line.key, line.strike) == (  # type: ignore[attr-defined]
        "charge",
        "charge-7",
        "charge(customer == 7)",
    )
    assert any(
        "1 strike(s) in effect: charge(customer == 7)" in r.getMessage() for r in caplog.records
    )


async def test_running_workers_log_changes(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="shadows.worker"):
        async with Worker(shadow) as worker, running(worker):
            await shadow.strike("charge")
            await wait_for(lambda: len(worker.strikes) == 1, 5, "the strike")
            await shadow.restore("charge")
            await wait_for(lambda: len(worker.strikes) == 0, 5, "the restore")
    messages = [r.getMessage() for r in caplog.records]
    assert "Strike in effect: charge" in messages
    assert "Strike restored: charge" in messages


async def test_a_worker_stops_promptly_while_it_follows_strikes(shadow: Shadow) -> None:
    async with Worker(shadow) as worker:
        task = asyncio.create_task(worker.run_forever())
        await wait_for(
            lambda: worker._follower is not None and worker._follower._connection is not None,
            10,
            "the worker to block on the feed of strikes",
        )
        began = time.monotonic()
        worker.stop()
        await task
    assert time.monotonic() - began < 1.0


async def test_an_unreadable_strike_is_ignored_by_workers_and_can_still_be_restored(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []

    async def charge(customer: int) -> None:
        ran.append(customer)

    field = json.dumps(
        {
            "function": "charge",
            "parameter": "customer",
            "operator": "==",
            "codec": "pickle",
            "data": base64.b64encode(b"not a pickle").decode(),
            "repr": "Thing(1)",
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    keys = shadow.keys
    await shadow.scripts.strike(
        keys=[keys.strikes_in_effect, keys.strikes], args=["strike", 10, field]
    )
    await shadow.strike(charge, "customer", "==", 2)
    assert await shadow.strikes() == [Strike("charge", "customer", "==", 2)]
    await shadow.add(charge)(1)
    await shadow.add(charge)(2)
    with caplog.at_level(logging.ERROR, logger="shadows.worker"):
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
    assert ran == [1]
    assert any(
        "Ignoring the strike charge(customer == Thing(1))" in r.message for r in caplog.records
    )
    assert await shadow.restore("charge", "customer", "==", "Thing(1)") is True
    assert await shadow.client.hlen(keys.strikes_in_effect) == 1


async def test_a_signing_worker_ignores_strike_values_it_cannot_trust(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[Any] = []

    async def expire(until: datetime) -> None:
        ran.append(until)

    cutoff = datetime(2024, 1, 1, tzinfo=UTC)
    await shadow.strike(expire, "until", "<", cutoff)  # pickled, but not signed
    async with Shadow(name=shadow.name, url=shadow.url, signing_key="k") as signed:
        await signed.strike(expire, "until", ">", cutoff)  # pickled and signed
        assert await signed.strikes() == [Strike("expire", "until", ">", cutoff)]
        for moment in (cutoff - timedelta(days=1), cutoff, cutoff + timedelta(days=1)):
            await signed.add(expire)(moment)
        with caplog.at_level(logging.ERROR, logger="shadows.worker"):
            async with Worker(signed) as worker:
                await worker.run_until_finished()
    assert sorted(ran) == [cutoff - timedelta(days=1), cutoff]
    assert any("unsigned or signed with another key" in r.message for r in caplog.records)
    assert await shadow.restore(expire, "until", "<", cutoff) is True


async def test_the_follower_rides_out_a_redis_restart(tmp_path: Path) -> None:
    with RedisProcess() as server:
        async with Shadow(name="restart", url=server.url) as shadow:
            worker = Worker(shadow, reconnection_delay=timedelta(milliseconds=200))
            async with worker, running(worker):
                await shadow.strike("charge")
                await wait_for(lambda: len(worker.strikes) == 1, 5, "the first strike")
                server.restart()  # not persistent: the strike is gone with the data
                await shadow.strike("refund")
                await wait_for(
                    lambda: [str(s) for s in worker.strikes] == ["refund"],
                    20,
                    "the worker to reload the strikes after the restart",
                )


async def test_strikes_work_for_the_acl_user_the_production_guide_documents(
    tmp_path: Path, repo_root: Path
) -> None:
    [command] = [
        line
        for line in (repo_root / "docs" / "production.md").read_text().splitlines()
        if line.startswith("ACL SETUSER shadows ")
    ]
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default off\n"
        "user admin on >admin-pw ~* &* +@all\n" + command.replace("ACL SETUSER ", "user ", 1) + "\n"
    )
    ran: list[int] = []

    async def charge(customer: int) -> None:
        ran.append(customer)

    with RedisProcess(extra_args=["--aclfile", str(acl)]) as server:
        url = f"redis://shadows:CHANGE-ME@127.0.0.1:{server.port}/0"
        async with Shadow(name="orders", url=url) as shadow:
            shadow.register(charge)
            async with Worker(shadow) as worker, running(worker):
                await shadow.strike(charge, "customer", "==", 1)
                await wait_for(lambda: len(worker.strikes) == 1, 5, "the strike")
                keys = [(await shadow.add(charge)(c)).key for c in (1, 2)]
                await wait_for(await settled(shadow, keys), 10, "both calls")
                assert await shadow.strikes() == [Strike("charge", "customer", "==", 1)]
                assert await shadow.restore(charge, "customer", "==", 1)
                await wait_for(lambda: len(worker.strikes) == 0, 5, "the restore")
    assert ran == [2]


# -- the command line, against a real Redis ----------------------------------------------


async def test_cli_strike_list_and_restore(redis_url: str, shadow_name: str) -> None:
    env = {"SHADOW_URL": redis_url, "SHADOW_NAME": shadow_name}
    result = shadows_cli_in_process("strike", "charge", "customer", "==", "42", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Struck charge(customer == 42) on shadow '{shadow_name}'"
    result = shadows_cli_in_process("strike", "charge", "customer", "==", "42", env=env)
    assert (
        result.stdout.strip() == f"Already struck: charge(customer == 42) on shadow '{shadow_name}'"
    )
    for args in (
        ["strike", "charge", "customer", "eq", '"42"'],
        ["strike", "--all-tasks", "amount", ">", "-5"],
        ["strike", "*", "region", "!=", "eu-west"],
        ["strike", "refund"],
    ):
        result = shadows_cli_in_process(*args, "--url", redis_url, "--shadows", shadow_name)
        assert result.returncode == 0, result.stderr

    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        listed = await shadow.strikes()
        assert listed == [
            Strike("charge", "customer", "==", 42),
            Strike("charge", "customer", "==", "42"),
            Strike(None, "amount", ">", -5),
            Strike(None, "region", "!=", "eu-west"),
            Strike("refund"),
        ]
        assert [type(s.value) for s in listed[:2]] == [int, str]

        result = shadows_cli_in_process("strikes", env=env)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == f"5 strikes in effect on shadow '{shadow_name}':"
        assert [line.split("  since ")[0].strip() for line in lines[1:]] == [str(s) for s in listed]
        assert all(" UTC" in line for line in lines[1:])

        result = shadows_cli_in_process("strikes", "--json", env=env)
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document[0] == {
            "function": "charge",
            "parameter": "customer",
            "operator": "==",
            "value": 42,
            "value_repr": "42",
            "since": listed[0].since.isoformat(),  # type: ignore[union-attr]
        }
        assert document[4]["parameter"] is None and document[4]["function"] == "refund"

        for args in (
            ["charge", "customer", "==", "42"],
            ["--all", "amount", "gt", "-5"],
            ["refund"],
        ):
            result = shadows_cli_in_process("restore", *args, env=env)
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("Restored ")
        assert [str(s) for s in await shadow.strikes()] == [
            "charge(customer == '42')",
            "*(region != 'eu-west')",
        ]
        result = shadows_cli_in_process("restore", "refund", env=env)
        assert_one_line_error(result, "no strike refund is in effect", shadow_name)
        for args in (["charge", "customer", "==", '"42"'], ["*", "region", "ne", "eu-west"]):
            assert shadows_cli_in_process("restore", *args, env=env).returncode == 0
        result = shadows_cli_in_process("strikes", env=env)
        assert result.stdout.strip() == f"No strikes in effect on shadow '{shadow_name}'"
        assert json.loads(shadows_cli_in_process("strikes", "--json", env=env).stdout) == []


async def test_cli_lists_and_restores_a_value_only_the_codec_can_store(
    redis_url: str, shadow_name: str
) -> None:
    env = {"SHADOW_URL": redis_url, "SHADOW_NAME": shadow_name}
    cutoff = datetime(2024, 1, 1, tzinfo=UTC)
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        await shadow.strike("expire", "until", "<", cutoff)
        listed = shadows_cli_in_process("strikes", env=env).stdout.splitlines()[1]
        assert listed.strip().startswith(f"expire(until < {cutoff!r})")
        document = json.loads(shadows_cli_in_process("strikes", "--json", env=env).stdout)
        assert document[0]["value"] is None and document[0]["value_repr"] == repr(cutoff)
        result = shadows_cli_in_process("restore", "expire", "until", "<", repr(cutoff), env=env)
        assert result.returncode == 0, result.stderr
        assert await shadow.strikes() == []
        # A plain string value is not a stand-in for anything else.
        await shadow.strike("expire", "until", "==", "x")
        assert await shadow.restore("expire", "until", "==", "'x'") is False


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["strike", "charge", "customer", "=~", "1"], ["unknown operator '=~'", "=="]),
        (["restore", "charge", "customer", "<>", "1"], ["unknown operator '<>'"]),
        (["strike", "charge", "customer", "==", "[1, 2"], ["cannot parse the value '[1, 2'"]),
        (["strike", "charge", "customer"], ["give TASK", "got 2 arguments"]),
        (["strike"], ["give TASK", "got 0 arguments"]),
        (["strike", "*"], ["'*' (every task) needs PARAMETER OPERATOR VALUE"]),
        (["strike", "--all-tasks", "charge"], ["--all-tasks takes PARAMETER OPERATOR VALUE"]),
        (["strike", "charge", "--url", "http://example.com"], ["Invalid shadow URL", "scheme"]),
        (["strikes", "--url", "redis://host:port"], ["Invalid shadow URL"]),
        (["strike", "charge", "--shadows", "has space"], ["Invalid shadow name"]),
        (["strike", "charge", "--url", "redis://127.0.0.1:1/0"], ["cannot reach Redis"]),
        (["restore", "charge", "--url", "redis://127.0.0.1:1/0"], ["cannot reach Redis"]),
        (["strikes", "--url", "redis://127.0.0.1:1/0"], ["cannot reach Redis"]),
    ],
)
def test_cli_bad_input_is_one_clear_line(args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(shadows_cli_in_process(*args), *fragments)


def test_cli_reads_the_url_from_the_environment() -> None:
    result = shadows_cli_in_process("strikes", env={"SHADOW_URL": "redis://127.0.0.1:1/0"})
    assert_one_line_error(result, "cannot reach Redis")


def records_of(path: Path, kind: str) -> list[str]:
    return [r[1] for r in read_records(path) if r[0] == kind]


async def test_a_strike_from_the_cli_reaches_a_running_worker_process(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs, log = tmp_path / "runs", tmp_path / "worker.log"
    env = {"SHADOW_URL": redis_url, "SHADOW_NAME": shadow_name}
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        worker = spawn_worker(redis_url, shadow_name, log=log)
        try:
            await shadow.add(record_and_sleep)(str(runs), "warm-up", 0)
            await wait_for(lambda: records_of(runs, "end") == ["warm-up"], 30, "the worker")

            result = shadows_cli_in_process(
                "strike", "record_and_sleep", "label", "==", "bad", env=env
            )
            assert result.returncode == 0, result.stderr
            await wait_for(
                lambda: "Strike in effect: record_and_sleep(label == 'bad')" in log.read_text(),
                5,
                "the worker to log the strike",
            )
            bad = await shadow.add(record_and_sleep)(str(runs), "bad", 0)
            await shadow.add(record_and_sleep)(str(runs), "good", 0)
            await wait_for(lambda: "good" in records_of(runs, "end"), 10, "the good call")
            await wait_for(await settled(shadow, [bad.key]), 10, "the stricken call")
            assert await shadow.task_state(bad.key) == "stricken"
            assert "bad" not in records_of(runs, "start")
            assert "stricken by record_and_sleep(label == 'bad'), not run" in log.read_text()

            result = shadows_cli_in_process(
                "restore", "record_and_sleep", "label", "==", "bad", env=env
            )
            assert result.returncode == 0, result.stderr
            await wait_for(
                lambda: "Strike restored: record_and_sleep(label == 'bad')" in log.read_text(),
                5,
                "the worker to log the restore",
            )
            await shadow.add(record_and_sleep)(str(runs), "bad", 0)
            await wait_for(lambda: "bad" in records_of(runs, "end"), 10, "the restored call")
        finally:
            worker.send_signal(signal.SIGTERM)
            await wait_for(lambda: worker.poll() is not None, 30, "the worker to exit")
    assert worker.returncode == 0, log.read_text()


async def test_a_worker_process_started_after_the_strike_honours_it(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs, log = tmp_path / "runs", tmp_path / "worker.log"
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        for label in ("keep", "drop", "keep-too"):
            await shadow.add(record_and_sleep)(str(runs), label, 0)
        await shadow.strike(None, "label", "==", "drop")
        worker = spawn_worker(redis_url, shadow_name, "--until-finished", log=log)
        await wait_for(lambda: worker.poll() is not None, 60, "the worker to finish")
    assert worker.returncode == 0, log.read_text()
    assert sorted(records_of(runs, "end")) == ["keep", "keep-too"]
    assert "1 strike(s) in effect: *(label == 'drop')" in log.read_text()

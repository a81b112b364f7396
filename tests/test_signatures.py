"""Signatures that mean something: bound to their shadow, of a bounded age, and never
laundered by a retry of a dead letter."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from shadows import Shadow, Worker
from shadows.core.execution import Message
from shadows.core.serialization import (
    SIGNATURE_FIELD,
    SIGNED_AT_FIELD,
    PayloadError,
    Payloads,
    PickleCodec,
)
from shadows.operations.dead_letters import UnverifiedLetterError

KEY = "s3cret-signing-key"
seen: list[Any] = []


async def record(*args: Any) -> None:
    seen.append(args)


@pytest.fixture(autouse=True)
def clear_seen() -> None:
    seen.clear()


async def run_all(shadow: Shadow) -> None:
    async with Worker(shadow) as worker:
        await worker.run_until_finished()


@contextmanager
def clock_behind(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Iterator[None]:
    """Messages sealed in the block are signed ``seconds`` ago (a message captured long
    ago, replayed now)."""
    monkeypatch.setattr(
        "shadows.core.serialization.time", SimpleNamespace(time=lambda: time.time() - seconds)
    )
    try:
        yield
    finally:
        monkeypatch.undo()


async def test_a_message_signed_for_one_shadow_is_refused_by_another(
    url: str, shadow_name: str
) -> None:
    """Two shadows share a signing key: a message copied from one stream to the other
    (by anyone who can write to Redis) is refused there, and still runs where it was sent."""
    async with (
        Shadow(name=f"{shadow_name}-a", url=url, signing_key=KEY) as payments,
        Shadow(name=f"{shadow_name}-b", url=url, signing_key=KEY) as refunds,
    ):
        try:
            await payments.add(record, key="transfer-1")(100)
            [(_, fields)] = await payments.client.xrange(payments.keys.stream)
            await refunds.client.xadd(refunds.keys.stream, fields)  # the replay
            refunds.register(record)
            await run_all(refunds)
            assert seen == []
            letter = await refunds.failed_task("transfer-1")
            assert letter is not None
            assert letter.reason == "rejected"
            assert "bad signature" in letter.error
            assert "for another shadow" in letter.error

            await run_all(payments)
            assert seen == [(100,)]
        finally:
            await refunds.purge_failed()


async def test_a_signed_message_older_than_max_message_age_is_refused(
    url: str, shadow_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: dict[str, Any] = {"name": shadow_name, "url": url, "signing_key": KEY}
    async with Shadow(**settings, max_message_age=timedelta(minutes=10)) as shadow:
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        with clock_behind(monkeypatch, 3600):  # captured an hour ago, replayed now
            await shadow.add(record, when=an_hour_ago, key="stale")(1)
        await shadow.add(record, key="fresh")(2)
        [stale] = [
            f for _, f in await shadow.client.xrange(shadow.keys.stream) if b"stale" in f[b"key"]
        ]
        assert int(stale[SIGNED_AT_FIELD.encode()]) < (time.time() - 3500) * 1000
        await run_all(shadow)
        assert seen == [(2,)]
        letter = await shadow.failed_task("stale")
        assert letter is not None
        assert letter.reason == "rejected"
        assert "too old" in letter.error
        assert "max_message_age" in letter.error

        # Its signature verifies: a retry signs it afresh, and it runs.
        assert await shadow.retry_failed("stale") == "queued"
        await run_all(shadow)
        assert seen == [(2,), (1,)]

    # Without max_message_age (the default), age does not matter.
    async with Shadow(**settings) as lenient:
        with clock_behind(monkeypatch, 3600):
            await lenient.add(record, when=an_hour_ago, key="old-but-fine")(3)
        await run_all(lenient)
        assert seen[-1] == (3,)


async def test_the_age_of_a_future_task_counts_from_when_it_is_due(
    url: str, shadow_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Shadow(
        name=shadow_name, url=url, signing_key=KEY, max_message_age=timedelta(minutes=1)
    ) as shadow:
        due = datetime.now(UTC) + timedelta(milliseconds=50)
        with clock_behind(monkeypatch, 3600):  # signed an hour before it is due
            await shadow.add(record, when=due, key="planned")(4)
        await run_all(shadow)
        assert seen == [(4,)]
        assert await shadow.failed() == []


async def test_retry_re_signs_only_letters_whose_signature_verifies(
    url: str, shadow_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(n: int) -> None:
        raise RuntimeError(f"broken {n}")

    async with Shadow(name=shadow_name, url=url) as intruder:  # no key
        await intruder.add(record, key="forged")(666)
    async with Shadow(name=shadow_name, url=url, signing_key=KEY) as shadow:
        try:
            await shadow.add(broken, key="genuine")(7)
            shadow.register(record)
            await run_all(shadow)
            reasons = {letter.key: letter.reason for letter in await shadow.failed()}
            assert reasons == {"forged": "rejected", "genuine": "failed"}

            assert await shadow.retry_failed("genuine") == "queued"
            with pytest.raises(UnverifiedLetterError, match="'forged' has no valid signature"):
                await shadow.retry_failed("forged")
            letter = await shadow.failed_task("forged")
            assert letter is not None  # kept, untouched
            assert SIGNATURE_FIELD not in letter.fields

            with caplog.at_level(logging.WARNING, logger="shadows.dead_letters"):
                assert await shadow.retry_failed("forged", force_unverified=True) == "queued"
            [warning] = [r for r in caplog.records if r.name == "shadows.dead_letters"]
            assert "Re-signing the failed task record [key=forged]" in warning.getMessage()
            assert "unsigned message refused" in warning.getMessage()
            await shadow.clear()
        finally:
            await shadow.purge_failed()


async def test_a_dead_letter_written_straight_into_redis_is_not_re_signed(
    url: str, shadow_name: str
) -> None:
    """Whatever its stated reason, a letter is re-signed only if its own signature holds."""
    async with Shadow(name=shadow_name, url=url, signing_key=KEY) as shadow:
        keys = shadow.keys
        args = PickleCodec().dumps(("rm -rf /",))
        fields: dict[str, Any] = {
            "reason": "failed",
            "error": "RuntimeError: looks ordinary",
            "failed_at": str(int(time.time() * 1000)),
            "m.key": "planted",
            "m.function": "record",
            "m.when": "0",
            "m.attempt": "3",
            "m.args": args,
            "m.kwargs": PickleCodec().dumps({}),
            "m.signed_at": str(int(time.time() * 1000)),
            "m.signature": "0" * 64,
        }
        odd = {**fields, "m.key": "odd", "m.signature": "é" * 64}  # not even hex
        await shadow.client.hset(keys.dead("planted"), mapping=fields)
        await shadow.client.hset(keys.dead("odd"), mapping=odd)
        await shadow.client.zadd(keys.failed, {"planted": time.time() * 1000})
        await shadow.client.zadd(keys.failed, {"odd": time.time() * 1000})
        try:
            for key in ("planted", "odd"):
                with pytest.raises(UnverifiedLetterError, match="bad signature"):
                    await shadow.retry_failed(key)
            assert await shadow.client.xlen(keys.stream) == 0
            assert await shadow.task_state("planted") is None
        finally:
            await shadow.purge_failed()


def test_messages_signed_the_old_way_are_refused_with_a_clear_reason() -> None:
    """Before signatures named their shadow, they covered the fields only: such a message
    could be replayed anywhere, so it is refused, and said to be."""
    payloads = Payloads(PickleCodec(), KEY.encode(), "orders")
    args, kwargs = payloads.encode((1,), {})
    old = Message("k", "f", 1000, 1, args, kwargs)
    old.extra[SIGNATURE_FIELD] = payloads._signature(old)  # the unbound form
    with pytest.raises(PayloadError, match="signed the old way, without the shadow's name"):
        payloads.check(old)
    payloads.seal(old)
    payloads.check(old)  # sealed again, it is signed for "orders"
    with pytest.raises(PayloadError, match="for another shadow"):
        Payloads(PickleCodec(), KEY.encode(), "refunds").check(old)


def test_max_message_age_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="max_message_age must be positive"):
        Shadow(url="memory://ages", max_message_age=timedelta(0))
    with pytest.raises(TypeError, match="max_message_age must be a timedelta"):
        Shadow(url="memory://ages", max_message_age=60)  # type: ignore[arg-type]
    monkeypatch.setenv("SHADOW_MAX_MESSAGE_AGE", "1h")
    assert Shadow(url="memory://ages").payloads.max_age == timedelta(hours=1)
    monkeypatch.setenv("SHADOW_MAX_MESSAGE_AGE", "soon")
    with pytest.raises(ValueError, match="SHADOW_MAX_MESSAGE_AGE: invalid duration 'soon'"):
        Shadow(url="memory://ages")


def test_the_signing_key_never_shows() -> None:
    shadow = Shadow(url="memory://keys", signing_key=KEY)
    for shown in (repr(shadow), repr(shadow.payloads), str(shadow.payloads)):
        assert KEY not in shown
    assert repr(shadow.payloads) == f"Payloads(pickle, signed, shadow={shadow.name!r})"

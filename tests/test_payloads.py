"""Payload safety: non-pickle codecs and signed messages."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from shadows import Shadow, Worker
from shadows.core.execution import Message
from shadows.core.serialization import JSONCodec, MsgpackCodec, PayloadError, Payloads, codec_named

seen: list[Any] = []


async def record(*args: Any, **kwargs: Any) -> None:
    seen.append((args, kwargs))


@pytest.fixture(autouse=True)
def clear_seen() -> None:
    seen.clear()


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_safe_codecs_carry_plain_data(url: str, shadow_name: str, codec: str) -> None:
    async with Shadow(name=shadow_name, url=url, codec=codec) as shadow:
        await shadow.add(record, key="plain")(1, "two", [3, 4], {"five": 5.0}, flag=True)
        entry = (await shadow.client.xrange(shadow.keys.stream))[0][1]
        assert entry[b"codec"] == codec.encode()
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
    assert seen == [((1, "two", [3, 4], {"five": 5.0}), {"flag": True})]


async def test_json_refuses_what_it_cannot_encode(url: str, shadow_name: str) -> None:
    async with Shadow(name=shadow_name, url=url, codec="json") as shadow:
        with pytest.raises(TypeError, match="the json codec cannot encode"):
            await shadow.add(record)(object())
        assert await shadow.client.xlen(shadow.keys.stream) == 0


async def test_a_worker_decodes_only_its_own_codec(
    url: str, shadow_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A JSON worker never unpickles: a pickled message is refused and dead-lettered."""
    async with Shadow(name=shadow_name, url=url) as producer:
        await producer.add(record, key="pickled")(1)
    async with Shadow(name=shadow_name, url=url, codec="json") as shadow:
        shadow.register(record)
        with caplog.at_level(logging.ERROR, logger="shadows"):
            async with Worker(shadow) as worker:
                await worker.run_until_finished()
        assert seen == []
        letter = await shadow.failed_task("pickled")
        assert letter is not None
        assert letter.reason == "rejected"
        assert "encoded with the pickle codec" in letter.error
        await shadow.purge_failed()


async def test_signed_messages_run(url: str, shadow_name: str) -> None:
    async with Shadow(name=shadow_name, url=url, signing_key="s3cret") as shadow:
        await shadow.add(record, key="signed")(42)
        entry = (await shadow.client.xrange(shadow.keys.stream))[0][1]
        assert len(entry[b"signature"]) == 64
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
    assert seen == [((42,), {})]


async def test_unsigned_and_tampered_messages_are_refused(url: str, shadow_name: str) -> None:
    async with Shadow(name=shadow_name, url=url) as unsigned_producer:
        await unsigned_producer.add(record, key="unsigned")(1)
    async with Shadow(name=shadow_name, url=url, signing_key="s3cret") as shadow:
        await shadow.add(record, key="tampered")(2)
        # an attacker with write access to Redis swaps the arguments
        entries = await shadow.client.xrange(shadow.keys.stream)
        tampered_id, fields = next(e for e in entries if e[1][b"key"] == b"tampered")
        fields[b"args"] = shadow.codec.dumps((666,))
        await shadow.client.xdel(shadow.keys.stream, tampered_id)
        await shadow.client.xadd(shadow.keys.stream, fields)
        async with Shadow(name=shadow_name, url=url, signing_key="other key") as wrong:
            await wrong.add(record, key="wrong-key")(3)
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
        assert seen == []
        reasons = {letter.key: letter.error for letter in await shadow.failed()}
        assert set(reasons) == {"unsigned", "tampered", "wrong-key"}
        assert "unsigned message refused" in reasons["unsigned"]
        assert "bad signature" in reasons["tampered"]
        assert "bad signature" in reasons["wrong-key"]
        await shadow.purge_failed()


async def test_retries_and_future_runs_stay_signed(url: str, shadow_name: str) -> None:
    from datetime import timedelta

    from shadows import Retry

    attempts: list[int] = []

    async def flaky(retry: Retry = Retry(attempts=3, delay=timedelta(milliseconds=10))) -> None:
        attempts.append(retry.attempt)
        if retry.attempt < 3:
            raise RuntimeError("again")

    async with Shadow(name=shadow_name, url=url, signing_key=b"k") as shadow:
        await shadow.add(flaky, key="flaky")()
        async with Worker(shadow, scheduling_resolution=timedelta(milliseconds=10)) as worker:
            await worker.run_until_finished()
        assert attempts == [1, 2, 3]
        assert await shadow.failed() == []


def test_signing_key_and_codec_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHADOW_SIGNING_KEY", "from-env")
    monkeypatch.setenv("SHADOW_CODEC", "json")
    shadow = Shadow(url="memory://env-payloads")
    assert shadow.payloads.signing_key == b"from-env"
    assert shadow.codec.name == "json"


def test_unknown_codec() -> None:
    with pytest.raises(ValueError, match="Unknown codec 'yaml'"):
        Shadow(url="memory://x", codec="yaml")
    assert isinstance(codec_named("JSON"), JSONCodec)
    assert isinstance(codec_named("msgpack"), MsgpackCodec)


def test_the_signature_covers_every_field() -> None:
    payloads = Payloads(JSONCodec(), b"key")
    args, kwargs = payloads.encode((1,), {})
    message = payloads.seal(Message("k", "f", 1000, 1, args, kwargs, extra={"traceparent": "t"}))
    payloads.check(message)
    for change in (
        {"key": "other"},
        {"function": "evil"},
        {"when_ms": 2000},
        {"attempt": 2},
        {"args": b"[2]"},
        {"kwargs": b'{"x":1}'},
    ):
        altered = dataclasses.replace(message, **change, extra=dict(message.extra))  # type: ignore[arg-type]
        with pytest.raises(PayloadError, match="bad signature"):
            payloads.check(altered)
    altered = dataclasses.replace(message, extra={**message.extra, "traceparent": "u"})
    with pytest.raises(PayloadError, match="bad signature"):
        payloads.check(altered)


async def test_a_dead_letter_is_retried_only_with_its_own_codec(url: str, shadow_name: str) -> None:
    async def fails(n: int) -> None:
        raise RuntimeError("no")

    async with Shadow(name=shadow_name, url=url, codec="json") as shadow:
        await shadow.add(fails, key="json-task")(1)
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
    async with Shadow(name=shadow_name, url=url) as pickled:
        with pytest.raises(ValueError, match="encoded with the json codec"):
            await pickled.retry_failed("json-task")
    async with Shadow(name=shadow_name, url=url, codec="json") as shadow:
        assert await shadow.retry_failed("json-task") == "queued"
        await shadow.clear()

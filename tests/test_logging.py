"""Log lines: ``Logged`` rendering, start/end lines, formats, built-in tasks."""

from __future__ import annotations

import json
import logging
import re
from collections import deque
from typing import Annotated

import pytest

from shadows import Logged, Shadow, Worker
from shadows.core.annotations import render_call
from shadows.core.log_formats import JSONFormatter, configure_logging
from shadows.tasks import fail, sleep, trace


async def process_payment(
    customer_id: Annotated[str, Logged],
    credit_card: str,
    amount: Annotated[float, Logged],
    items: Annotated[list[str], Logged(length_only=True)] | None = None,
    tags: Annotated[dict[str, str], Logged(length_only=True)] | None = None,
) -> None:
    pass


def test_logged_arguments_are_shown_and_the_rest_hidden() -> None:
    assert (
        render_call(process_payment, ("12345",), {"credit_card": "4111", "amount": 150.0})
        == "process_payment('12345', credit_card=..., amount=150.0)"
    )
    assert (
        render_call(process_payment, ("12345", "4111", 150.0), {})
        == "process_payment('12345', ..., 150.0)"
    )


def test_length_only_shows_sizes() -> None:
    rendered = render_call(
        process_payment,
        ("1", "4111", 1.0),
        {"items": ["x"] * 150, "tags": {str(i): "v" for i in range(5)}},
    )
    assert rendered == "process_payment('1', ..., 1.0, items=[len 150], tags={len 5})"


def test_length_only_brackets_the_size_like_the_value_and_shows_what_has_no_size() -> None:
    marker = Logged(length_only=True)
    assert marker.render(("a", "b", "c")) == "(len 3)"
    assert marker.render(["a"]) == "[len 1]"
    assert marker.render(range(4)) == "[len 4]"
    assert marker.render(deque([1, 2])) == "[len 2]"
    assert marker.render({"k": 1}) == "{len 1}"
    assert marker.render({1, 2}) == "{len 2}"
    assert marker.render(frozenset()) == "{len 0}"
    assert marker.render("hello") == "'len 5'"
    assert marker.render(b"\x00\x01") == "b'len 2'"
    # Nothing to measure: shown as Logged shows it, not hidden as "...".
    assert marker.render(42) == "42"
    assert marker.render(None) == "None"
    assert marker.render(1.5) == Logged().render(1.5) == "1.5"

    class Refuses:
        def __len__(self) -> int:
            raise TypeError("len() of unsized object")

        def __repr__(self) -> str:
            return "Refuses()"

    assert marker.render(Refuses()) == "Refuses()"


def test_long_values_are_shortened() -> None:
    rendered = render_call(process_payment, ("x" * 1000, "card", 1.0), {})
    assert len(rendered) < 300


async def test_start_and_end_lines_render_the_call(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    await shadow.add(process_payment, key="pay-1")("12345", credit_card="4111 1111", amount=150.0)
    with caplog.at_level(logging.INFO, logger="shadows"):
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
    lines = [r.getMessage() for r in caplog.records if r.name == "shadows.worker"]
    call = "process_payment('12345', credit_card=..., amount=150.0)"
    assert f"▶ {call} [key=pay-1 attempt=1]" in lines
    end = next(line for line in lines if line.startswith("✔"))
    assert re.fullmatch(
        re.escape(f"✔ {call} [key=pay-1 attempt=1] completed in ") + r"\d+\.\d (ms|s)", end
    ), end
    assert "4111" not in caplog.text


async def test_builtin_tasks(shadow: Shadow, caplog: pytest.LogCaptureFixture) -> None:
    await shadow.add(trace, key="t")("hello from trace")
    await shadow.add(fail, key="f")("planned failure")
    await shadow.add(sleep, key="s")(0.01)
    with caplog.at_level(logging.INFO):
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
    assert "trace: hello from trace" in caplog.text
    assert "RuntimeError: planned failure" in caplog.text
    assert await shadow.task_state("t") == "completed"
    assert await shadow.task_state("f") == "failed"
    assert await shadow.task_state("s") == "completed"
    assert "▶ sleep(0.01) [key=s attempt=1]" in caplog.text


def test_json_lines_carry_the_task_fields() -> None:
    record = logging.LogRecord("shadows.worker", logging.INFO, "", 0, "done %s", ("x",), None)
    record.task = "send"
    record.key = "k1"
    document = json.loads(JSONFormatter().format(record))
    assert document["message"] == "done x"
    assert document["task"] == "send"
    assert document["key"] == "k1"
    assert document["level"] == "INFO"


@pytest.mark.parametrize("form", ["rich", "plain", "json"])
def test_every_format_can_be_configured(form: str) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("DEBUG", form)
        assert root.level == logging.DEBUG
        assert len(root.handlers) == 1
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])

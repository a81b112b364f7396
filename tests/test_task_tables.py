"""``[task.NAME]`` tables for the behaviours of results and flow control: ``results``
(kept by the workers) and ``debounce`` (applied by the producers), from a config file to
what the worker does, on real Redis and memory://. Cooldown and rate limit tables are
tested in ``test_flow_control.py``."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shadows import Debounce, Shadow, Worker
from shadows.settings import ConfigError, activated, load_settings
from shadows.settings.discovery import apply_tables
from shadows.settings.effective import task_entries
from shadows.settings.loading import Loaded

FAST = timedelta(milliseconds=10)


def config(folder: Path, text: str) -> Loaded:
    (folder / "shadows.toml").write_text(textwrap.dedent(text))
    return load_settings(environ={}, cwd=folder)


async def test_results_in_a_task_table_decide_which_return_values_are_kept(
    url: str, shadow_name: str, tmp_path: Path
) -> None:
    loaded = config(
        tmp_path,
        """
        [task.total]
        results = false
        [task.secret]
        results = true
        """,
    )
    async with Shadow(name=shadow_name, url=url) as shadow:

        @shadow.task
        async def total(n: int) -> int:
            return n * 2

        @shadow.task(results=False)
        async def secret() -> str:
            return "kept after all"

        @shadow.task
        async def plain() -> int:
            return 7

        assert apply_tables(loaded, shadow) == []
        summed, told, left = (
            await total.schedule(21),
            await secret.schedule(),
            await plain.schedule(),
        )
        async with Worker(shadow) as worker:
            await worker.run_until_finished()

        assert await summed.get_result(timeout=5) is None
        assert not await shadow.client.hexists(shadow.keys.run(summed.key), "result")
        assert await shadow.task_state(summed.key) == "completed"
        assert await told.get_result(timeout=5) == "kept after all"
        assert await left.get_result(timeout=5) == 7

    entries = task_entries(loaded, {"total": total, "secret": secret, "plain": plain})
    assert entries["task.total.results"] == {"value": False, "source": "file"}
    assert entries["task.secret.results"] == {"value": True, "source": "file"}
    assert "task.plain.results" not in entries


async def test_a_debounce_table_makes_a_producer_collapse_a_burst(
    url: str, shadow_name: str, tmp_path: Path
) -> None:
    loaded = config(
        tmp_path,
        """
        [task.reindex]
        debounce = "50ms"
        [task.export]
        debounce = { settle = "50ms", scope = "account" }
        """,
    )
    runs: list[str] = []
    with activated(loaded):  # what a command does before it imports the task modules
        shadow = Shadow(name=shadow_name, url=url)
    async with shadow:

        @shadow.task
        async def reindex(revision: int) -> None:
            runs.append(f"reindex {revision}")

        @shadow.task(debounce=Debounce(timedelta(hours=1), keep="first"))
        async def export(account: str, n: int) -> None:
            runs.append(f"export {account} {n}")

        burst = {(await reindex.schedule(revision)).key for revision in range(5)}
        assert len(burst) == 1  # the file's debounce, though the code declares none
        by_name = {(await shadow.add("reindex")(revision)).key for revision in (5, 6)}
        assert by_name == burst  # a call by name joins the same burst
        for n in range(3):
            for account in ("a", "b"):
                await export.schedule(account, n)
        with pytest.raises(ValueError, match="debounced"):
            await shadow.replace(reindex, datetime.now(UTC), key="any")(1)
        with pytest.raises(ValueError, match="debounced"):
            async with shadow.batch() as batch:
                batch.add(reindex)(1)

        assert apply_tables(loaded, shadow) == []  # the worker's side agrees
        async with Worker(shadow, scheduling_resolution=FAST) as worker:
            await worker.run_until_finished()

    # One run per burst: the last call's arguments for reindex; for export, the file's
    # settle and scope over the code's keep="first".
    assert sorted(runs) == ["export a 0", "export b 0", "reindex 6"]
    entries = task_entries(loaded, {"reindex": reindex, "export": export})
    assert entries["task.export.debounce"] == {
        "value": {"settle": "50ms", "max_wait": None, "keep": "first", "scope": "account"},
        "source": "file",
    }


async def test_a_debounce_table_that_cannot_work_names_its_file_table_and_key(
    url: str, shadow_name: str, tmp_path: Path
) -> None:
    loaded = config(
        tmp_path,
        """
        [task.notify]
        debounce = { max_wait = "1s" }
        """,
    )
    with activated(loaded):
        shadow = Shadow(name=shadow_name, url=url)
    async with shadow:

        @shadow.task
        async def notify() -> None: ...

        message = (
            "shadows.toml, key task.notify: debounce needs settle (the task declares no "
            "Debounce to keep it)"
        )
        with pytest.raises(ValueError) as raised:
            await notify.schedule()
        assert str(raised.value) == message
        [problem] = apply_tables(loaded, shadow)
        assert str(problem) == message


def test_bad_values_in_the_new_tables_are_reported_with_their_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        config(
            tmp_path,
            """
            [task.send]
            results = "perhaps"
            debounce = { settle = "soon", keep = "middle", wait = "1s" }
            """,
        )
    message = str(raised.value)
    for fragment in (
        "shadows.toml, key task.send.results: Input should be a valid boolean",
        "shadows.toml, key task.send.debounce.settle: invalid duration 'soon'",
        "shadows.toml, key task.send.debounce.keep: Input should be 'last' or 'first'",
        "shadows.toml, key task.send.debounce.wait: unknown setting 'wait'",
    ):
        assert fragment in message, message


def test_the_new_keys_come_from_variables_too(tmp_path: Path) -> None:
    loaded = load_settings(
        environ={
            "SHADOW_TASK_REINDEX_DEBOUNCE": '{"settle": "2s", "keep": "first"}',
            "SHADOW_TASK_NOTIFY_DEBOUNCE": "500ms",
            "SHADOW_TASK_REINDEX_RESULTS": "false",
        },
        cwd=tmp_path,
    )
    reindex, notify = loaded.task_settings("reindex"), loaded.task_settings("NOTIFY")
    assert reindex is not None and notify is not None
    assert reindex.results is False
    assert reindex.debounce is not None and notify.debounce is not None
    assert (reindex.debounce.settle, reindex.debounce.keep) == (timedelta(seconds=2), "first")
    assert notify.debounce.settle == timedelta(milliseconds=500)
    assert loaded.origin(("task", "reindex", "results")).kind == "env"

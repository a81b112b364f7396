"""Every Python example in the guides runs as written.

Each ```python block of the pages below is compiled with top-level ``await`` allowed and
run in a fresh namespace, as a self-contained program (the examples use ``memory://``, so
no Redis server is needed). A block that defines parameterless ``test_*`` coroutine
functions (the testing guide's examples) also has them called, as pytest would.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).parent.parent / "docs"
PAGES = [
    "dependencies.md",
    "behaviours.md",
    "flow-control.md",
    "testing.md",
    "advanced-patterns.md",
    "strikes.md",
    "dashboard.md",
    "execution-state.md",
]
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)


def python_blocks(page: str) -> list[str]:
    return BLOCK.findall((DOCS / page).read_text())


EXAMPLES = [
    pytest.param(page, index, source, id=f"{page}-{index + 1}")
    for page in PAGES
    for index, source in enumerate(python_blocks(page))
]


def test_every_guide_has_examples() -> None:
    for page in PAGES:
        assert python_blocks(page), f"docs/{page} has no ```python blocks"


@pytest.mark.parametrize(("page", "index", "source"), EXAMPLES)
async def test_example_runs(page: str, index: int, source: str) -> None:
    name = f"docs/{page} [python block {index + 1}]"
    code = compile(source, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"__name__": f"docs_example_{index + 1}"}
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        await asyncio.wait_for(result, timeout=30)

    for function_name, function in list(namespace.items()):
        if (
            function_name.startswith("test_")
            and inspect.iscoroutinefunction(function)
            and not inspect.signature(function).parameters
        ):
            await asyncio.wait_for(function(), timeout=30)

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
    "observability.md",
]
#: Pages whose untitled ```python blocks are not run here, and why. A block with a
#: title (```python title="myapp/tasks.py"```) is a file of a larger program, not run.
RUN_ELSEWHERE = {
    "getting-started.md": "tests/test_quickstart.py runs each block in order",
    "api-reference.md": "signatures; its import list is checked below",
    "index.md": "the landing page's teaser, the quick start's first block (a local Redis)",
    "worker.md": "a worker that runs forever against a local Redis",
    "dashboard.md": "mounting the dashboard in a Starlette app: tests/test_dashboard.py",
}
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)


def python_blocks(page: str) -> list[str]:
    return BLOCK.findall((DOCS / page).read_text())


EXAMPLES = [
    pytest.param(page, index, source, id=f"{page}-{index + 1}")
    for page in PAGES
    for index, source in enumerate(python_blocks(page))
]


def test_every_page_with_examples_has_them_run() -> None:
    with_examples = {page.name for page in DOCS.glob("*.md") if python_blocks(page.name)}
    assert with_examples - set(PAGES) - set(RUN_ELSEWHERE) == set()
    assert set(RUN_ELSEWHERE) <= with_examples  # an exemption that has become useless


def test_the_api_reference_lists_every_public_name() -> None:
    import shadows

    page = (DOCS / "api-reference.md").read_text()
    namespace: dict[str, Any] = {}
    exec(python_blocks("api-reference.md")[0], namespace)  # the import list, as a user runs it
    listed = {name for name in namespace if name != "__builtins__"}
    assert listed == set(shadows.__all__)
    body = page.split("```", 2)[2]  # what follows the import list
    undocumented = [
        name
        for name in shadows.__all__
        if f"`{name}" not in body and f"## {name}" not in body and f"{name}(" not in body
    ]
    assert undocumented == []


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

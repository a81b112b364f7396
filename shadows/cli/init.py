"""``shadows init``: write a commented ``shadows.toml`` for the project in this folder."""

from __future__ import annotations

import contextlib
import re
import tomllib
from pathlib import Path
from typing import Annotated

import typer

from shadows.cli.app import app
from shadows.cli.errors import CLIError
from shadows.settings.reference import render_toml


@app.command()
def init(
    force: Annotated[
        bool,
        typer.Option(
            "--force", envvar="SHADOW_INIT_FORCE", help="Overwrite an existing shadows.toml."
        ),
    ] = False,
) -> None:
    """Write a commented shadows.toml here: the shadow named after the project, its task
    modules (the tasks.py files found), and every other setting at its default."""
    target = Path.cwd() / "shadows.toml"
    if target.exists() and not force:
        raise CLIError(f"{target} exists: use --force to overwrite it")
    chosen: dict[str, object] = {"name": project_name(Path.cwd())}
    tasks = task_modules(Path.cwd())
    if tasks:
        chosen["tasks"] = tasks
    target.write_text(render_toml(chosen, comment_all=True), encoding="utf-8")
    found = ", ".join(tasks) if tasks else "none found: list them in tasks"
    print(f"Wrote {target} (task modules: {found})")


def project_name(folder: Path) -> str:
    """The project's name (``[project].name`` of ``pyproject.toml``, else the folder's),
    made a valid shadow name."""
    name = folder.name
    project = folder / "pyproject.toml"
    if project.is_file():
        with contextlib.suppress(KeyError, TypeError, ValueError, OSError):
            name = tomllib.loads(project.read_text(encoding="utf-8"))["project"]["name"]
    return re.sub(r"[{}\s]+", "-", str(name)).strip("-") or "shadows"


def task_modules(folder: Path) -> list[str]:
    """``tasks.py`` modules at the top level or in the top-level packages."""
    found = ["tasks"] if (folder / "tasks.py").is_file() else []
    for package in sorted(folder.iterdir()):
        if ((package / "__init__.py").is_file() and (package / "tasks.py").is_file()) or (
            (package / "__init__.py").is_file() and (package / "tasks" / "__init__.py").is_file()
        ):
            found.append(f"{package.name}.tasks")
    return found

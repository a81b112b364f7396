"""A finished task's result as its page may show it.

The stored bytes are checked as :meth:`Execution.get_result` checks them (the shadow's
codec, and its signature when signing is on) and then decoded without importing
anything: a pickled result may only name classes of modules this process has already
loaded, and never the callables that run commands or code. Whatever cannot be decoded
that way is shown as a placeholder saying why, never as an error page.
"""

from __future__ import annotations

import io
import pickle
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shadows.core.serialization import PayloadError
from shadows.dashboard.formatting import cap

if TYPE_CHECKING:
    from shadows.producer.shadow import Shadow

#: Longest rendered result shown on a page (the same cap as the call's).
RESULT_LIMIT = 4000

#: Modules and builtins a stored pickle may never reach from a dashboard.
_FORBIDDEN_MODULES = frozenset(
    {"os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "pty", "socket"}
)
_FORBIDDEN_BUILTINS = frozenset(
    {"eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr",
     "globals", "locals", "vars", "input", "breakpoint", "exit", "quit"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Result:
    """The result as shown (``value``), or why it is not (``note``)."""

    value: str | None
    note: str | None = None


class _LoadedOnly(pickle.Unpickler):
    """Resolves names only in modules already imported here, never a dangerous one."""

    def find_class(self, module: str, name: str) -> Any:
        root = module.partition(".")[0]
        if root in _FORBIDDEN_MODULES or (module == "builtins" and name in _FORBIDDEN_BUILTINS):
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed here")
        loaded = sys.modules.get(module)
        if loaded is None:
            raise pickle.UnpicklingError(f"module {module!r} is not loaded in the dashboard")
        target: Any = loaded
        for part in name.split("."):
            target = getattr(target, part)
        return target


def render_result(
    shadow: Shadow, key: str, state: str | None, run: dict[Any, Any]
) -> Result | None:
    """The result of a completed run (``None`` for any other state)."""
    if state != "completed":
        return None
    refused = _field(run, "result_error")
    if refused is not None:
        return Result(None, f"Not stored: {_text(refused)}")
    data = _field(run, "result")
    if data is None:
        return Result(None, "Not stored (the task keeps no result, or it has expired).")
    if isinstance(data, str):
        data = data.encode()
    codec = _text(_field(run, "result_codec") or "")
    signature = _field(run, "result_signature")
    payloads = shadow.payloads
    try:
        payloads.verify_result(key, data, codec, _text(signature) if signature else None)
    except PayloadError as error:
        return Result(None, f"Its result cannot be shown safely here: {error}")
    try:
        if codec == "pickle":
            value = _LoadedOnly(io.BytesIO(data)).load()
        else:
            value = payloads.codec.loads(data)
        text = repr(value)
    except Exception as error:
        return Result(
            None, f"Its result cannot be decoded safely here: {type(error).__name__}: {error}"
        )
    return Result(cap(text, RESULT_LIMIT))


def _field(run: dict[Any, Any], name: str) -> Any:
    value = run.get(name.encode())
    return run.get(name) if value is None else value


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

"""How task arguments are turned into bytes for Redis and back."""

from __future__ import annotations

from typing import Any, Protocol

import cloudpickle


class Codec(Protocol):
    """Encodes the argument tuple and keyword mapping of a task call."""

    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class PickleCodec:
    """cloudpickle: nearly any Python object travels, but only trusted producers may write.

    Unpickling runs code chosen by whoever wrote the payload, so a shadow must only accept
    work from producers you trust.
    """

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        data: bytes = cloudpickle.dumps(value)
        return data

    def loads(self, data: bytes) -> Any:
        return cloudpickle.loads(data)

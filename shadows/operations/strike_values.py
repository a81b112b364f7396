"""How a strike's value is stored: as JSON when JSON holds it exactly, as a Python
literal, or through the shadow's codec (signed when the shadow signs its payloads)."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import math
from collections.abc import Mapping
from typing import Any

from shadows.core.serialization import Payloads


def encode_value(value: Any, payloads: Payloads) -> dict[str, Any]:
    """``{"value": v}`` when JSON holds ``value`` exactly, ``{"literal": repr}`` for other
    Python literals (tuples, sets, bytes...), else the shadow's codec (datetimes, UUIDs,
    enums... with pickle), signed when the shadow signs its payloads, with a ``repr`` for
    readers that cannot decode it."""
    if json_exact(value):
        return {"value": value}
    if literal_exact(value):
        return {"literal": repr(value)}
    codec = payloads.codec
    try:
        data = codec.dumps(value)
    except Exception as error:
        raise ValueError(
            f"Cannot store the strike value {value!r} with the {codec.name} codec: "
            f"{type(error).__name__}: {error}"
        ) from None
    document = {"codec": codec.name, "data": base64.b64encode(data).decode(), "repr": repr(value)}
    if payloads.signing_key is not None:
        document["signature"] = _signature(payloads.signing_key, codec.name, data)
    return document


def decode_value(document: Mapping[str, Any], payloads: Payloads) -> Any:
    """The value :func:`encode_value` stored. A codec-encoded value is decoded only with
    this shadow's own codec and, when it signs payloads, only with a valid signature:
    strikes are no way around the rules for task payloads."""
    if "value" in document:
        return document["value"]
    if "literal" in document:
        return ast.literal_eval(document["literal"])
    codec = payloads.codec
    listed = document.get("repr")
    if document.get("codec") != codec.name:
        raise ValueError(
            f"the value {listed} was stored with the {document.get('codec')} codec, "
            f"and this shadow decodes only {codec.name}"
        )
    data = base64.b64decode(document["data"])
    if payloads.signing_key is not None:
        signature = document.get("signature")
        expected = _signature(payloads.signing_key, codec.name, data)
        if not isinstance(signature, str) or not hmac.compare_digest(signature, expected):
            raise ValueError(f"the value {listed} is unsigned or signed with another key")
    try:
        return codec.loads(data)
    except Exception as error:
        raise ValueError(
            f"cannot decode the value {listed}: {type(error).__name__}: {error}"
        ) from None


def _signature(key: bytes, codec: str, data: bytes) -> str:
    digest = hmac.new(key, b"shadows strike value\0" + codec.encode() + b"\0", hashlib.sha256)
    digest.update(data)
    return digest.hexdigest()


def json_exact(value: Any) -> bool:
    """JSON gives back exactly this value, types included (no tuples, no subclasses)."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(json_exact(item) for item in value)
    if kind is dict:
        return all(type(key) is str and json_exact(item) for key, item in value.items())
    return False


_LITERAL_TYPES = (type(None), bool, int, float, complex, str, bytes, tuple, list, dict, set)


def literal_exact(value: Any) -> bool:
    """``ast.literal_eval(repr(value))`` gives back exactly this value, types included."""
    if not _literal_types(value):
        return False
    try:
        return _identical(value, ast.literal_eval(repr(value)))
    except Exception:
        return False


def _literal_types(value: Any) -> bool:
    kind = type(value)
    if kind not in _LITERAL_TYPES:
        return False
    if kind in (tuple, list, set):
        return all(_literal_types(item) for item in value)
    if kind is dict:
        return all(_literal_types(k) and _literal_types(v) for k, v in value.items())
    return True


def _identical(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            _identical(ka, kb) and _identical(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)

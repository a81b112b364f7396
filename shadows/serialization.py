"""How task arguments become bytes in Redis and back, and how payloads are signed.

Three codecs: ``pickle`` (cloudpickle, the default: nearly any object travels, but
decoding runs code chosen by whoever wrote the payload), ``json`` (standard library: only
JSON values travel, decoding runs no code) and ``msgpack`` (the ``msgpack`` package: the
same safety as JSON, compact and fast). A message names its codec (no name: pickle), and a
worker decodes only messages in its own codec, so a JSON worker never unpickles.

Signing (opt-in): with a shared secret, producers add an HMAC-SHA256 signature over every
field of a message, and workers refuse messages that are unsigned or whose signature does
not match, before decoding anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from typing import TYPE_CHECKING, Any, Protocol

import cloudpickle

if TYPE_CHECKING:
    from .execution import Message

#: The message field naming the codec (absent means pickle).
CODEC_FIELD = "codec"
#: The message field carrying the HMAC signature.
SIGNATURE_FIELD = "signature"


class Codec(Protocol):
    """Encodes the argument tuple and the keyword mapping of a task call."""

    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


#: Types the standard pickler writes exactly as cloudpickle would (it defers to it for
#: them), and does so without cloudpickle's per-call set-up cost.
_SCALARS = frozenset({int, str, float, bool, bytes, type(None)})


def _scalars_only(value: Any) -> bool:
    kind = type(value)
    if kind is tuple or kind is list:
        return all(type(item) in _SCALARS for item in value)
    if kind is dict:
        return all(type(item) in _SCALARS for item in value.values()) and all(
            type(name) is str for name in value
        )
    return False


class PickleCodec:
    """cloudpickle: nearly any Python object; only for producers you trust."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        if _scalars_only(value):  # the common call (ids, names, numbers): same bytes, faster
            return pickle.dumps(value, protocol=cloudpickle.DEFAULT_PROTOCOL)
        data: bytes = cloudpickle.dumps(value)
        return data

    def loads(self, data: bytes) -> Any:
        return cloudpickle.loads(data)


class JSONCodec:
    """JSON values only (str, int, float, bool, None, lists, dicts with string keys).

    Tuples arrive as lists. Decoding cannot run code.
    """

    name = "json"

    def dumps(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as error:
            raise TypeError(f"the json codec cannot encode these arguments: {error}") from None

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class MsgpackCodec:
    """MessagePack values (like JSON, plus bytes); needs ``pip install shadow-task[msgpack]``."""

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError:
            raise ValueError(
                "the msgpack codec needs the msgpack package: pip install 'shadow-task[msgpack]'"
            ) from None
        self._msgpack = msgpack

    def dumps(self, value: Any) -> bytes:
        try:
            data: bytes = self._msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError) as error:
            raise TypeError(f"the msgpack codec cannot encode these arguments: {error}") from None
        return data

    def loads(self, data: bytes) -> Any:
        return self._msgpack.unpackb(data, raw=False, strict_map_key=False)


def codec_named(name: str) -> Codec:
    """The codec called ``name`` (pickle, json or msgpack)."""
    codecs: dict[str, type[PickleCodec] | type[JSONCodec] | type[MsgpackCodec]] = {
        "pickle": PickleCodec,
        "json": JSONCodec,
        "msgpack": MsgpackCodec,
    }
    try:
        return codecs[name.lower()]()
    except KeyError:
        raise ValueError(f"Unknown codec {name!r}: use pickle, json or msgpack") from None


class PayloadError(ValueError):
    """A message this worker must not decode: wrong codec, missing or bad signature."""


class Payloads:
    """The codec and the optional signing key of one shadow: seals and opens messages."""

    def __init__(self, codec: Codec, signing_key: bytes | None = None) -> None:
        self.codec = codec
        self.signing_key = signing_key

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bytes, bytes]:
        return self.codec.dumps(args), self.codec.dumps(kwargs)

    def decode(self, message: Message) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of ``message``, after checking its codec and signature."""
        self.check(message)
        args = self.codec.loads(message.args)
        kwargs = self.codec.loads(message.kwargs)
        if isinstance(args, list):
            args = tuple(args)
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise PayloadError("arguments must decode to a sequence and a mapping")
        return args, kwargs

    def seal(self, message: Message) -> Message:
        """Name the codec and sign ``message`` (in place); returns it."""
        message.extra.pop(SIGNATURE_FIELD, None)
        if self.codec.name == "pickle":
            message.extra.pop(CODEC_FIELD, None)
        else:
            message.extra[CODEC_FIELD] = self.codec.name
        if self.signing_key is not None:
            message.extra[SIGNATURE_FIELD] = self._signature(message)
        return message

    def check(self, message: Message) -> None:
        """Raise :class:`PayloadError` unless this worker may decode ``message``."""
        codec = message.extra.get(CODEC_FIELD, "pickle")
        if codec != self.codec.name:
            raise PayloadError(
                f"encoded with the {codec} codec, but this worker decodes only {self.codec.name}"
            )
        if self.signing_key is None:
            return
        signature = message.extra.get(SIGNATURE_FIELD)
        if not signature:
            raise PayloadError("unsigned message refused (this shadow requires signatures)")
        if not hmac.compare_digest(signature, self._signature(message)):
            raise PayloadError("bad signature: the message was altered or signed with another key")

    def _signature(self, message: Message) -> str:
        assert self.signing_key is not None
        digest = hmac.new(self.signing_key, digestmod=hashlib.sha256)
        for name, value in _signed_fields(message):
            data = value if isinstance(value, bytes) else value.encode()
            digest.update(len(name).to_bytes(4, "big") + name.encode())
            digest.update(len(data).to_bytes(8, "big") + data)
        return digest.hexdigest()


def _signed_fields(message: Message) -> list[tuple[str, str | bytes]]:
    fields = message.fields()
    pairs = [
        (str(fields[i]), fields[i + 1])
        for i in range(0, len(fields), 2)
        if fields[i] != SIGNATURE_FIELD
    ]
    return sorted(pairs, key=lambda pair: pair[0])

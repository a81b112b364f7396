"""How task arguments become bytes in Redis and back, and how payloads are signed.

Three codecs: ``pickle`` (cloudpickle, the default: nearly any object travels, but
decoding runs code chosen by whoever wrote the payload), ``json`` (standard library: only
JSON values travel, decoding runs no code) and ``msgpack`` (the ``msgpack`` package: the
same safety as JSON, compact and fast). A message names its codec (no name: pickle), and a
worker decodes only messages in its own codec, so a JSON worker never unpickles.

Signing (opt-in): with a shared secret, producers add an HMAC-SHA256 signature over every
field of a message and the shadow's name, and workers refuse messages that are unsigned or
whose signature does not match, before decoding anything. The name in the signature keeps
a message signed for one shadow from being replayed into another that shares the key; the
signing time (a signed field) lets a shadow refuse messages older than ``max_age``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import cloudpickle

if TYPE_CHECKING:
    from shadows.core.message import Message

#: The message field naming the codec (absent means pickle).
CODEC_FIELD = "codec"
#: The message field carrying the HMAC signature.
SIGNATURE_FIELD = "signature"
#: The signed message field holding when it was signed (ms since the epoch).
SIGNED_AT_FIELD = "signed_at"
#: What the signature covers before the message's fields: the scheme and the shadow name.
_SCHEME = b"shadows-signature-2"
_RESULT_SCHEME = b"shadows-result-1"


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


class StaleMessageError(PayloadError):
    """A validly signed message older than the shadow's ``max_message_age``."""


class Payloads:
    """The codec and the optional signing key of one shadow: seals and opens messages.

    ``shadow`` is the name signatures are bound to; ``max_age``, when set, is how old (since
    it was signed, or since it was due if later) a signed message may be when it runs.
    """

    def __init__(
        self,
        codec: Codec,
        signing_key: bytes | None = None,
        shadow: str = "",
        max_age: timedelta | None = None,
    ) -> None:
        if max_age is not None:
            if not isinstance(max_age, timedelta):
                raise TypeError(f"max_message_age must be a timedelta, not {max_age!r}")
            if max_age <= timedelta(0):
                raise ValueError(f"max_message_age must be positive, not {max_age}")
        self.codec = codec
        self.signing_key = signing_key
        self.shadow = shadow
        self.max_age = max_age
        self._max_age_ms = None if max_age is None else max_age.total_seconds() * 1000

    def __repr__(self) -> str:
        signed = "signed" if self.signing_key is not None else "unsigned"
        return f"Payloads({self.codec.name}, {signed}, shadow={self.shadow!r})"

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bytes, bytes]:
        return self.codec.dumps(args), self.codec.dumps(kwargs)

    def decode(
        self, message: Message, fresh: bool = False
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of ``message``, after checking its codec and signature (and, when
        ``fresh``, its age: for running it)."""
        self.check(message, fresh)
        args = self.codec.loads(message.args)
        kwargs = self.codec.loads(message.kwargs)
        if isinstance(args, list):
            args = tuple(args)
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise PayloadError("arguments must decode to a sequence and a mapping")
        return args, kwargs

    def seal(self, message: Message) -> Message:
        """Name the codec and sign ``message`` (in place); returns it."""
        extra = message.extra
        extra.pop(SIGNATURE_FIELD, None)
        extra.pop(SIGNED_AT_FIELD, None)
        if self.codec.name == "pickle":
            extra.pop(CODEC_FIELD, None)
        else:
            extra[CODEC_FIELD] = self.codec.name
        if self.signing_key is not None:
            extra[SIGNED_AT_FIELD] = str(int(time.time() * 1000))
            extra[SIGNATURE_FIELD] = self._signature(message, _SCHEME, self.shadow)
        return message

    def check(self, message: Message, fresh: bool = False) -> None:
        """Raise :class:`PayloadError` unless this worker may decode ``message``; with
        ``fresh``, :class:`StaleMessageError` too when it is older than ``max_age``."""
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
        if SIGNED_AT_FIELD not in message.extra:
            if _same(signature, self._signature(message)):
                raise PayloadError(
                    "signed the old way, without the shadow's name (by an earlier shadows "
                    "release), so it could be replayed from another shadow: refused"
                )
        elif _same(signature, self._signature(message, _SCHEME, self.shadow)):
            if fresh and self._max_age_ms is not None:
                self._check_age(message)
            return
        raise PayloadError(
            "bad signature: the message was altered, or signed with another key or for "
            "another shadow"
        )

    def seal_result(self, key: str, value: Any) -> list[str | bytes]:
        """The run record fields holding ``value``, the result of the run of ``key``:
        encoded with the codec, and signed (bound to the shadow and the key) with a key."""
        data = self.codec.dumps(value)
        fields: list[str | bytes] = ["result", data, "result_codec", self.codec.name]
        if self.signing_key is not None:
            fields += ["result_signature", self._result_signature(key, self.codec.name, data)]
        return fields

    def open_result(self, key: str, data: bytes, codec: str, signature: str | None) -> Any:
        """The value :meth:`seal_result` stored; :class:`PayloadError` when it was encoded
        with another codec or its signature does not verify."""
        self.verify_result(key, data, codec, signature)
        return self.codec.loads(data)

    def verify_result(self, key: str, data: bytes, codec: str, signature: str | None) -> None:
        """Raise :class:`PayloadError` unless ``data`` is a result this shadow may decode:
        in its codec and, when signing is on, signed for ``key``."""
        if codec != self.codec.name:
            raise PayloadError(
                f"result encoded with the {codec} codec, but this shadow decodes {self.codec.name}"
            )
        if self.signing_key is not None and not (
            signature and _same(signature, self._result_signature(key, codec, data))
        ):
            raise PayloadError(f"result of {key!r} refused: unsigned, or its signature is bad")

    def _result_signature(self, key: str, codec: str, data: bytes) -> str:
        assert self.signing_key is not None
        digest = hmac.new(self.signing_key, digestmod=hashlib.sha256)
        for part in (_RESULT_SCHEME, self.shadow.encode(), key.encode(), codec.encode(), data):
            digest.update(len(part).to_bytes(8, "big") + part)
        return digest.hexdigest()

    def _check_age(self, message: Message) -> None:
        assert self._max_age_ms is not None
        assert self.max_age is not None
        try:
            signed_at = int(message.extra[SIGNED_AT_FIELD])
        except ValueError:
            raise PayloadError(f"malformed {SIGNED_AT_FIELD} field") from None
        age_ms = time.time() * 1000 - max(signed_at, message.when_ms)
        if age_ms > self._max_age_ms:
            raise StaleMessageError(
                f"too old: signed {age_ms / 1000:.0f} s before it ran (or was due), and "
                f"this shadow refuses signed messages older than {self.max_age} "
                "(max_message_age)"
            )

    def _signature(self, message: Message, scheme: bytes = b"", shadow: str = "") -> str:
        """The HMAC of ``message``; with a ``scheme``, over it and the ``shadow`` name
        first (without one, the unbound form of earlier releases)."""
        assert self.signing_key is not None
        digest = hmac.new(self.signing_key, digestmod=hashlib.sha256)
        if scheme:
            bound = shadow.encode()
            digest.update(scheme + len(bound).to_bytes(4, "big") + bound)
        for name, value in _signed_fields(message):
            data = value if isinstance(value, bytes) else value.encode()
            digest.update(len(name).to_bytes(4, "big") + name.encode())
            digest.update(len(data).to_bytes(8, "big") + data)
        return digest.hexdigest()


def _same(signature: str, expected: str) -> bool:
    """Compare in constant time; a signature that is not even ASCII is simply wrong."""
    return signature.isascii() and hmac.compare_digest(signature, expected)


def _signed_fields(message: Message) -> list[tuple[str, str | bytes]]:
    fields = message.fields()
    pairs = [
        (str(fields[i]), fields[i + 1])
        for i in range(0, len(fields), 2)
        if fields[i] != SIGNATURE_FIELD
    ]
    return sorted(pairs, key=lambda pair: pair[0])

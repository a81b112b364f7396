"""Strikes: a kill switch for a whole task, or for the calls whose argument matches a value.

A strike is a value (:class:`Strike`). The strikes in effect live in Redis, in a hash keyed
by each strike's canonical encoding, and every change also goes to a short feed stream.
A worker loads the whole hash when it starts and then blocks on the feed on its own
connection (:class:`StrikeFollower`); any entry makes it load the hash again, so a lost or
trimmed feed entry can never leave a worker with a stale list for longer than one change.
The worker checks its in-memory :class:`StrikeList` before running each message.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import hashlib
import hmac
import inspect
import json
import logging
import math
import operator as operators
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from redis.exceptions import ResponseError

from shadows.core.cancellation import CancelGuard
from shadows.core.connection import connection_options, node_client
from shadows.core.execution import from_ms
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff, sleep_unless
from shadows.core.serialization import Payloads

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from shadows.core.keys import Keys
    from shadows.producer.shadow import Shadow

logger = logging.getLogger("shadows.worker")

Operator = Literal["==", "!=", "<", "<=", ">", ">="]

#: How a call's argument is compared with a strike's value: ``argument OP value``.
OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operators.eq,
    "!=": operators.ne,
    "<": operators.lt,
    "<=": operators.le,
    ">": operators.gt,
    ">=": operators.ge,
}

#: Spellings the command line also accepts, because ``<`` and ``>`` need quoting in a shell.
OPERATOR_WORDS: dict[str, str] = {
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
}

#: Entries the feed keeps (approximately): it only wakes workers, the hash is the truth.
FEED_LENGTH = 1000


def parse_operator(text: str) -> Operator:
    """``text`` as an operator (a symbol or its word, like ``lt``); ``ValueError`` if unknown."""
    symbol = OPERATOR_WORDS.get(text.strip().lower(), text.strip())
    if symbol not in OPERATORS:
        raise ValueError(
            f"unknown operator {text!r}: use one of {', '.join(OPERATORS)} "
            f"(or {', '.join(OPERATOR_WORDS)})"
        )
    return cast(Operator, symbol)


# Openers of Python literal syntax: text starting with one of these that does not parse is
# a typo to report, not a plain string.
_LITERAL_OPENERS = ("'", '"', "[", "{", "(")


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal when it is one, else the text itself.

    ``42`` is an int, ``'"42"'`` the string ``"42"``, ``None``/``True`` what they say,
    ``[1, 2]`` a list; ``abc-123`` or ``2024-01-31`` are not literals and stay strings. Text
    that opens like a literal (a quote or a bracket) but does not parse raises ``ValueError``.
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        if text.strip().startswith(_LITERAL_OPENERS):
            reason = error.msg if isinstance(error, SyntaxError) and error.msg else "not a literal"
            raise ValueError(
                f"cannot parse the value {text!r} as a Python literal ({reason}); "
                "quote strings like '\"x\"'"
            ) from None
        return text


def compare(argument: Any, operator: str, value: Any) -> bool:
    """``argument OP value``; a comparison that raises (``"a" < 3``) simply does not match."""
    try:
        return bool(OPERATORS[operator](argument, value))
    except Exception:
        return False


@dataclass(frozen=True)
class Strike:
    """One strike: the task ``function`` (``None``: every task having ``parameter``), and,
    unless the whole task is stricken, the test ``<parameter> <operator> <value>``.

    ``since`` (when it was put in effect) is informational and not part of its identity.
    """

    function: str | None = None
    parameter: str | None = None
    operator: Operator = "=="
    value: Any = None
    since: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.function is not None and (not isinstance(self.function, str) or not self.function):
            raise ValueError(f"A strike's task must be a non-empty name, not {self.function!r}")
        if self.parameter is not None and (
            not isinstance(self.parameter, str) or not self.parameter
        ):
            raise ValueError(
                f"A strike's parameter must be a non-empty name, not {self.parameter!r}"
            )
        if self.function is None and self.parameter is None:
            raise ValueError("A strike needs a task, a parameter, or both")
        if self.operator not in OPERATORS:
            # Words (``lt``) are accepted as on the command line; anything else is an error.
            object.__setattr__(self, "operator", parse_operator(str(self.operator)))
        if self.parameter is None and (self.operator != "==" or self.value is not None):
            raise ValueError(
                "A strike of a whole task takes no operator or value (give a parameter)"
            )

    @property
    def whole_task(self) -> bool:
        """Every call of :attr:`function` is stricken, whatever its arguments."""
        return self.parameter is None

    def matches(self, function: str, arguments: Mapping[str, Any]) -> bool:
        """Whether the call of ``function`` with ``arguments`` (by parameter name) is stricken."""
        if self.function is not None and self.function != function:
            return False
        if self.parameter is None:
            return True
        if self.parameter not in arguments:
            return False
        return compare(arguments[self.parameter], self.operator, self.value)

    def same_as(self, other: Strike) -> bool:
        """Equal strikes match the same calls (``x == 1`` and ``x == 1.0`` are the same)."""
        try:
            return self == other
        except Exception:
            return False

    def named_by(self, asked: Strike) -> bool:
        """Whether a restore of ``asked`` lifts this strike: an equal strike, or, for a value
        only the codec can store (which no command line can type), its ``repr`` as text."""
        if self.same_as(asked):
            return True
        return (
            (self.function, self.parameter, self.operator)
            == (asked.function, asked.parameter, asked.operator)
            and isinstance(asked.value, str)
            and not _json_exact(self.value)
            and not _literal_exact(self.value)
            and repr(self.value) == asked.value
        )

    def __str__(self) -> str:
        task = self.function or "*"
        if self.parameter is None:
            return task
        return f"{task}({self.parameter} {self.operator} {self.value!r})"

    # -- the form stored in Redis ----------------------------------------------------

    def encode(self, payloads: Payloads) -> str:
        """Canonical JSON: the hash field of this strike, the same in every process."""
        document: dict[str, Any] = {
            "function": self.function,
            "parameter": self.parameter,
            "operator": self.operator,
        }
        if self.parameter is not None:
            document.update(encode_value(self.value, payloads))
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def decode(cls, text: str | bytes, payloads: Payloads, since: datetime | None = None) -> Strike:
        """The strike :meth:`encode` wrote; ``ValueError`` when it cannot be read back."""
        try:
            document = json.loads(text)
            parameter = document["parameter"]
            value = decode_value(document, payloads) if parameter is not None else None
            return cls(document["function"], parameter, document["operator"], value, since)
        except ValueError:
            raise
        except Exception as error:
            raise ValueError(
                f"malformed strike {text!r}: {type(error).__name__}: {error}"
            ) from None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description (``value`` is ``null`` when JSON cannot hold it exactly;
        ``value_repr`` is the Python form either way)."""
        whole = self.parameter is None
        return {
            "function": self.function,
            "parameter": self.parameter,
            "operator": None if whole else self.operator,
            "value": None if whole or not _json_exact(self.value) else self.value,
            "value_repr": None if whole else repr(self.value),
            "since": self.since.isoformat() if self.since else None,
        }


# -- values ---------------------------------------------------------------------------


def encode_value(value: Any, payloads: Payloads) -> dict[str, Any]:
    """``{"value": v}`` when JSON holds ``value`` exactly, ``{"literal": repr}`` for other
    Python literals (tuples, sets, bytes...), else the shadow's codec (datetimes, UUIDs,
    enums... with pickle), signed when the shadow signs its payloads, with a ``repr`` for
    readers that cannot decode it."""
    if _json_exact(value):
        return {"value": value}
    if _literal_exact(value):
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


def _json_exact(value: Any) -> bool:
    """JSON gives back exactly this value, types included (no tuples, no subclasses)."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_json_exact(item) for item in value)
    if kind is dict:
        return all(type(key) is str and _json_exact(item) for key, item in value.items())
    return False


_LITERAL_TYPES = (type(None), bool, int, float, complex, str, bytes, tuple, list, dict, set)


def _literal_exact(value: Any) -> bool:
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


# -- the state in Redis ---------------------------------------------------------------


@dataclass(frozen=True)
class UnreadableStrike:
    """A stored strike this process cannot decode (say, a value of a class it cannot
    import); kept so that it can still be listed and restored by its listed value."""

    field: str
    reason: str
    since: datetime | None = None

    @property
    def document(self) -> dict[str, Any]:
        try:
            document = json.loads(self.field)
        except ValueError:
            return {}
        return document if isinstance(document, dict) else {}

    def __str__(self) -> str:
        document = self.document
        task = document.get("function") or "*"
        if document.get("parameter") is None:
            return str(task)
        listed = document.get("repr", "?")
        return f"{task}({document.get('parameter')} {document.get('operator')} {listed})"

    def describes(self, strike: Strike) -> bool:
        """Named by its task, parameter, operator and the value exactly as listed."""
        document = self.document
        if (document.get("function"), document.get("parameter"), document.get("operator")) != (
            strike.function,
            strike.parameter,
            strike.operator,
        ):
            return False
        listed = document.get("repr")
        return listed is not None and (
            listed == repr(strike.value)
            or (isinstance(strike.value, str) and listed == strike.value)
        )

    def to_json(self) -> dict[str, Any]:
        document = self.document
        return {
            "function": document.get("function"),
            "parameter": document.get("parameter"),
            "operator": document.get("operator"),
            "value": None,
            "value_repr": document.get("repr"),
            "since": self.since.isoformat() if self.since else None,
            "error": self.reason,
        }


def decode_state(
    raw: Mapping[Any, Any], payloads: Payloads
) -> tuple[dict[str, Strike], dict[str, UnreadableStrike]]:
    """The strikes in a raw ``HGETALL`` of the state hash, by field, oldest first, and the
    ones that cannot be read here."""
    strikes: dict[str, Strike] = {}
    broken: dict[str, UnreadableStrike] = {}
    for raw_field, raw_id in sorted(raw.items(), key=lambda item: _position(item[1])):
        text = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
        ms = _position(raw_id)[0]
        since = from_ms(ms) if ms else None
        try:
            strikes[text] = Strike.decode(text, payloads, since)
        except ValueError as error:
            broken[text] = UnreadableStrike(text, str(error), since)
    return strikes, broken


async def read_strikes(
    client: Redis, keys: Keys, payloads: Payloads
) -> tuple[dict[str, Strike], dict[str, UnreadableStrike]]:
    """The strikes in effect by canonical field, and those this process cannot read."""
    return decode_state(await client.hgetall(keys.strikes_in_effect), payloads)


def flatten_arguments(arguments: dict[str, Any], signature: inspect.Signature) -> dict[str, Any]:
    """Arguments by parameter name with a ``**kwargs`` catch-all spread out, so that a strike
    on ``customer_id`` also sees ``f(**{"customer_id": 7})``; named parameters win."""
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = arguments.get(name)
            if isinstance(extra, dict) and extra:
                return {**extra, **{k: v for k, v in arguments.items() if k != name}}
    return arguments


class StrikeList:
    """The strikes a worker honours, indexed by task name for a cheap check per message."""

    def __init__(self) -> None:
        #: Whether the list has been read from Redis at least once.
        self.loaded = False
        self._by_field: dict[str, Strike] = {}
        self._whole: dict[str, Strike] = {}
        self._by_function: dict[str | None, list[Strike]] = {}

    def __len__(self) -> int:
        return len(self._by_field)

    def __iter__(self) -> Iterator[Strike]:
        return iter(list(self._by_field.values()))

    def __repr__(self) -> str:
        return f"StrikeList([{', '.join(str(s) for s in self)}])"

    def replace(self, strikes: Mapping[str, Strike]) -> tuple[list[Strike], list[Strike]]:
        """Make ``strikes`` (by canonical field) the list; returns what was added and removed."""
        added = [s for f, s in strikes.items() if f not in self._by_field]
        removed = [s for f, s in self._by_field.items() if f not in strikes]
        self._by_field = dict(strikes)
        self.loaded = True
        self._whole = {}
        self._by_function = {}
        for strike in strikes.values():
            if strike.whole_task and strike.function is not None:
                self._whole.setdefault(strike.function, strike)
            else:
                self._by_function.setdefault(strike.function, []).append(strike)
        return added, removed

    def task_strike(self, function: str) -> Strike | None:
        """The strike of the whole task ``function``, if there is one."""
        return self._whole.get(function)

    def match(self, function: str, arguments: Mapping[str, Any]) -> Strike | None:
        """The first strike that stops this call, or ``None``."""
        whole = self._whole.get(function)
        if whole is not None:
            return whole
        for key in (function, None):
            for strike in self._by_function.get(key, ()):
                if strike.matches(function, arguments):
                    return strike
        return None


class StrikeFollower:
    """Keeps one worker's :class:`StrikeList` in step with Redis, through outages."""

    def __init__(self, shadow: Shadow, strikes: StrikeList, reconnect_cap: float) -> None:
        self.shadow = shadow
        self.strikes = strikes
        self.reconnect_cap = reconnect_cap
        self._last_id = "0-0"
        self._server: Redis | None = None  # the server holding the feed
        self._connection: Redis | None = None
        self._connection_id: int | None = None
        self._reading = False
        self._reported: set[str] = set()
        timeout = connection_options(shadow.client).get("socket_timeout")
        # A block must end well before the client's socket timeout would call it dead.
        self._block_ms = int(1000 * min(5.0, max(0.05, timeout / 2) if timeout else 5.0))

    async def load(self) -> None:
        """Read the whole state, and the feed position it corresponds to, in one step."""
        keys = self.shadow.keys
        last, flat = await self.shadow.scripts.strikes_snapshot(
            keys=[keys.strikes_in_effect, keys.strikes], args=[]
        )
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        strikes, broken = decode_state(raw, self.shadow.payloads)
        for text, unreadable in broken.items():
            if text not in self._reported:
                self._reported.add(text)
                logger.error(
                    "Ignoring the strike %s: this worker cannot read it (%s)",
                    unreadable,
                    unreadable.reason,
                )
        first = not self.strikes.loaded
        added, removed = self.strikes.replace(strikes)
        self._last_id = _text(last)
        if first:
            if strikes:
                logger.warning(
                    "%d strike(s) in effect: %s",
                    len(strikes),
                    ", ".join(str(s) for s in strikes.values()),
                )
            return
        for strike in added:
            logger.warning("Strike in effect: %s", strike, extra={"strike": str(strike)})
        for strike in removed:
            logger.warning("Strike restored: %s", strike, extra={"strike": str(strike)})

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow the feed until cancelled or ``stopping``; reload the state on every change
        and after every outage (the feed may have been trimmed meanwhile)."""
        backoff = Backoff(self.reconnect_cap)
        stale = not self.strikes.loaded
        reported = False
        guard = CancelGuard()
        try:
            while not stopping.is_set():
                guard.check()
                try:
                    if stale:
                        await self.load()
                        stale = False
                        if reported:
                            logger.info("Following strikes again")
                        reported = False
                    if await self._changed(stopping, guard):
                        await self.load()
                    backoff.reset()
                except CONNECTION_ERRORS as error:
                    stale = True
                    await self._drop_connection()
                    delay = backoff.next()
                    if not reported:
                        logger.warning(
                            "Cannot follow strikes (%s); retrying in %.1f s", error, delay
                        )
                    reported = True
                    await sleep_unless(stopping, delay)
                except Exception:
                    # Not an outage: say so loudly, and keep trying rather than silently
                    # stop honouring strikes.
                    logger.exception("Following strikes failed; retrying")
                    stale = True
                    await self._drop_connection()
                    await sleep_unless(stopping, backoff.next())
        finally:
            if self._reading and self._connection_id is not None and self._server is not None:
                # Ends the server side of the abandoned read at once (the in-process
                # memory:// server would otherwise keep it until its timeout).
                with contextlib.suppress(Exception):
                    unblock = self._server.client_unblock(self._connection_id)
                    await asyncio.wait_for(unblock, 0.5)
            await self._drop_connection()

    async def _changed(self, stopping: asyncio.Event, guard: CancelGuard) -> bool:
        """Block on the feed (on this follower's own connection) for one block period."""
        if self._connection is None:
            self._server = await node_client(self.shadow.client, self.shadow.keys.strikes)
            self._connection = self._server.client()
            try:
                self._connection_id = await self._connection.client_id()
            except ResponseError:  # an ACL user without CLIENT: reads are simply abandoned
                self._connection_id = None
        # A stop or a cancel (which redis-py may have swallowed in the call above) that
        # came meanwhile must not wait out a whole block.
        guard.check()
        if stopping.is_set():
            return False
        self._reading = True
        response = await self._connection.xread(
            {self.shadow.keys.strikes: self._last_id}, count=100, block=self._block_ms
        )
        self._reading = False
        return bool(response)

    async def _drop_connection(self) -> None:
        # A read cancelled mid-flight may leave a reply on the socket: never reuse it. An
        # XREAD has no effect on the server, so abandoning one is harmless.
        client, self._connection = self._connection, None
        server, self._server = self._server, None
        self._connection_id, self._reading = None, False
        with contextlib.suppress(Exception):
            if client is not None and client.connection is not None:
                await client.connection.disconnect()
        with contextlib.suppress(Exception):
            if client is not None:
                await client.aclose()
            if server is not None and server is not self.shadow.client:
                await server.aclose()


def _position(entry_id: Any) -> tuple[int, int]:
    """``(ms, sequence)`` of a feed entry id such as ``b"1700000000000-0"``; zeros if unreadable."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, sequence = text.partition("-")
    try:
        return int(ms), int(sequence or 0)
    except ValueError:
        return 0, 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""Strikes: a kill switch for a whole task, or for the calls whose argument matches a value.

A strike is a value (:class:`Strike`). The strikes in effect live in Redis, in a hash keyed
by each strike's canonical encoding, and every change also goes to a short feed stream.
A worker loads the whole hash when it starts and then blocks on the feed on its own
connection (:mod:`shadows.worker.strike_follower`); any entry makes it load the hash, so a lost or
trimmed feed entry can never leave a worker with a stale list for longer than one change.
The worker checks its in-memory :class:`StrikeList` before running each message.

This module holds the model and the matching; :mod:`strike_values` how a value is stored.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import operator as operators
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from shadows.behaviours.base import Dependency, plan_for
from shadows.core.execution import from_ms
from shadows.core.functions import describe, task_name
from shadows.core.serialization import Payloads
from shadows.operations.strike_values import decode_value, encode_value, json_exact, literal_exact

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from shadows.core.keys import Keys

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
            and not json_exact(self.value)
            and not literal_exact(self.value)
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
            "value": None if whole or not json_exact(self.value) else self.value,
            "value_repr": None if whole else repr(self.value),
            "since": self.since.isoformat() if self.since else None,
        }


def strike_for(
    function: Callable[..., Any] | str | None,
    parameter: str | None,
    operator: Operator,
    value: Any,
    tasks: Mapping[str, Callable[..., Any]],
    payloads: Payloads,
    check: bool,
) -> Strike:
    """The strike of ``Shadow.strike``/``restore``'s arguments; with ``check``, a parameter
    the task (a function, or its name in ``tasks``) does not have is refused."""
    if function is None or isinstance(function, str):
        name = function
    elif callable(function):
        name = task_name(function)
    else:
        raise TypeError(f"Strike a task function, a task name or None, not {function!r}")
    strike = Strike(name, parameter, operator, value)
    if check and parameter is not None and name is not None:
        target = function if callable(function) else tasks.get(name)
        if target is not None:
            check_parameter(target, parameter)
    strike.encode(payloads)  # fails now, clearly, for a value that cannot be stored
    return strike


def check_parameter(function: Callable[..., Any], parameter: str) -> None:
    """Catch a misspelt parameter now rather than strike nothing in silence."""
    parameters = plan_for(function).signature.parameters
    found = parameters.get(parameter)
    name = describe(function)
    if found is not None:
        if found.kind in (found.VAR_POSITIONAL, found.VAR_KEYWORD):
            raise ValueError(f"{name}(): strike a named parameter, not *{parameter}/**{parameter}")
        if isinstance(found.default, Dependency):
            raise ValueError(
                f"{name}(): {parameter!r} is a dependency, not an argument a strike can test"
            )
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    known = ", ".join(parameters) or "none"
    raise ValueError(f"{name}() has no parameter {parameter!r} (parameters: {known})")


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
    for raw_field, raw_id in sorted(raw.items(), key=lambda item: entry_position(item[1])):
        text = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
        ms = entry_position(raw_id)[0]
        since = from_ms(ms) if ms else None
        try:
            strikes[text] = Strike.decode(text, payloads, since)
        except ValueError as error:
            broken[text] = UnreadableStrike(text, str(error), since)
    return strikes, broken


async def read_strikes(
    client: Redis | RedisCluster, keys: Keys, payloads: Payloads
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


def entry_position(entry_id: Any) -> tuple[int, int]:
    """``(ms, sequence)`` of a feed entry id such as ``b"1700000000000-0"``; zeros if unreadable."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, sequence = text.partition("-")
    try:
        return int(ms), int(sequence or 0)
    except ValueError:
        return 0, 0


def text_of(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""The base of the typed output documents: a frozen dataclass that reads and writes one
JSON object of DESIGN.md §5 without losing a key.

A document's typed fields are the contract's keys (and a few more that the readers
cannot do without), named exactly as in the file. ``from_json`` checks that every
required key is there — an ``InputError`` naming the file and the key when one is not —
and keeps every other key, in order, in ``extra``; ``to_json`` writes the typed fields
and ``extra`` back, in the order read (or the producer's order, ``ORDER``, for a document
built in code), so ``to_json(from_json(d)) == d`` key for key.

Optional typed fields default to ``None``, which means *absent*: ``to_json`` leaves them
out (a key present with the value ``null`` is kept in ``extra``). Sequences of rows read
as tuples; other nested values (lists of numbers, free-form records) are kept as read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self, TypeVar

from greenflow.errors import InputError

D = TypeVar("D", bound="JsonDocument")
Decoder = Callable[[Any, str], Any]  # (value, where) -> typed value
_BOOKKEEPING = ("extra", "key_order")


@dataclass(frozen=True)
class JsonDocument:
    """One JSON object of the run directory; subclasses add the typed fields."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)
    """Keys beyond the typed fields, as read or as the producer added them."""
    key_order: tuple[str, ...] = field(default=(), kw_only=True, compare=False, repr=False)
    """The keys' order as read (empty: ``ORDER``, then the rest as built)."""

    WHERE: ClassVar[str] = "document"  # names the document in error messages
    ORDER: ClassVar[tuple[str, ...]] = ()  # the producer's key order
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()  # typed keys a file may lack
    DECODE: ClassVar[Mapping[str, Decoder]] = {}  # typed keys whose values are documents

    @classmethod
    def typed_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name not in _BOOKKEEPING)

    @classmethod
    def required_keys(cls) -> tuple[str, ...]:
        return tuple(k for k in cls.typed_keys() if k not in cls.OPTIONAL)

    @classmethod
    def from_json(cls, doc: Any, where: str | None = None) -> Self:
        """The typed document of a parsed JSON object; ``where`` names it in errors."""
        where = where or cls.WHERE
        if not isinstance(doc, Mapping):
            raise InputError(f"{where}: expected a JSON object, got {type(doc).__name__}")
        missing = [k for k in cls.required_keys() if k not in doc]
        if missing:
            raise InputError(
                f"{where}: missing required key{'s' if len(missing) > 1 else ''} "
                + ", ".join(repr(k) for k in missing)
            )
        typed, extra = {}, {}
        for key, value in doc.items():
            if key in _BOOKKEEPING or key not in cls.typed_keys():
                extra[key] = value
            elif value is None and key in cls.OPTIONAL:
                extra[key] = None  # present as null: kept as such, the field stays None
            elif key in cls.DECODE:
                typed[key] = cls.DECODE[key](value, f"{where}: {key}")
            else:
                typed[key] = value
        return cls(**typed, extra=extra, key_order=tuple(doc))

    def to_json(self) -> dict[str, Any]:
        """The JSON object: typed fields and ``extra``, in the order read or ``ORDER``."""
        out: dict[str, Any] = {}
        for key in self.typed_keys():
            value = getattr(self, key)
            if value is None and key in self.OPTIONAL:
                continue
            out[key] = encode(value)
        for key, value in self.extra.items():
            out.setdefault(key, encode(value))
        order = self.key_order or self.ORDER
        ranked = {k: out[k] for k in order if k in out}
        return ranked | {k: v for k, v in out.items() if k not in ranked}


def encode(value: Any) -> Any:
    """``value`` as JSON data: documents as objects, tuples as lists."""
    if isinstance(value, JsonDocument):
        return value.to_json()
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, Mapping):
        return {k: encode(v) for k, v in value.items()}
    return value


def rows(cls: type[D]) -> Decoder:
    """Decoder of a JSON list of ``cls`` objects (a tuple of documents)."""

    def decode(value: Any, where: str) -> tuple[D, ...]:
        if not isinstance(value, list | tuple):
            raise InputError(f"{where}: expected a JSON list, got {type(value).__name__}")
        return tuple(cls.from_json(v, f"{where}[{i}]") for i, v in enumerate(value))

    return decode


def named(cls: type[D]) -> Decoder:
    """Decoder of a JSON object of ``cls`` objects by name."""

    def decode(value: Any, where: str) -> dict[str, D]:
        if not isinstance(value, Mapping):
            raise InputError(f"{where}: expected a JSON object, got {type(value).__name__}")
        return {k: cls.from_json(v, f"{where}[{k!r}]") for k, v in value.items()}

    return decode


def one(cls: type[D]) -> Decoder:
    """Decoder of one nested ``cls`` object."""
    return lambda value, where: cls.from_json(value, where)


def floats(value: Any, where: str) -> tuple[float, ...]:
    """Decoder of a JSON list of numbers."""
    if not isinstance(value, list | tuple):
        raise InputError(f"{where}: expected a JSON list, got {type(value).__name__}")
    return tuple(value)

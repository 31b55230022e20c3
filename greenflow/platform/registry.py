"""One way to register things by name: data sources, cascade models, allocation policies.

A ``Registry[T]`` maps a name (what users write: ``--dataset ali-ccp``, ``pool.models``,
a policy) to a typed entry, a constructor or a small spec, so adding a kind of thing is
its own module plus one ``register`` line. Looking up a name the registry lacks raises
its error type (``ConfigError`` unless told otherwise) listing the names it knows. Entries
are registered at import time of the module that owns the registry, in the order users
see them (CLI choices, output documents).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from greenflow.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """An explicit, ordered mapping from name to a typed entry (no lookup by class name)."""

    def __init__(self, kind: str, error: type[ConfigError] = ConfigError) -> None:
        self.kind = kind  # what a name names, for messages: "dataset", "model", ...
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a name registered twice is a programming error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry of ``name``; the registry's error, listing the known names, if none."""
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(
                f"unknown {self.kind} {name!r}; expected one of {self.names()}"
            ) from None

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"


__all__ = ["Registry"]

"""Name -> builder registries, so config names map to code without if/else chains."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from medrun.errors import MedrunError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """A named table of builders; unknown names fail with the list of valid ones."""

    def __init__(self, kind: str, key: str):
        self.kind = kind  # e.g. "model"
        self.key = key  # the config key that selects an entry, e.g. "model.name"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = fn
            return fn

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise MedrunError(
                f"unknown {self.kind} {name!r} ({self.key}); valid: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

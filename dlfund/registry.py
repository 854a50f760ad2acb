"""Name -> object lookup with errors that list what exists.

Every pluggable piece of dlfund (activations, losses, optimizers, schedules, metrics, models, datasets) lives in a
:class:`Registry`. A user may pass either a registered name or a callable; a misspelt name raises a ``ValueError``
that lists the known names and the closest matches, before anything is traced or compiled.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of objects of one kind (e.g. activation functions).

    Args:
      kind: what the entries are, in words ("activation", "loss"); used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        # Old names kept working after a rename; not listed by names(), so nothing runs twice under two names.
        self._aliases: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None):
        """Registers ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(value: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if name in self._aliases:
                raise ValueError(
                    f"{self.kind} {name!r} is an old name kept for {self._aliases[name]!r}; choose another name"
                )
            self._entries[name] = value
            return value

        return add if obj is None else add(obj)

    def alias(self, old: str, name: str) -> None:
        """Makes ``old`` another name for the registered ``name`` (a renamed entry's old name keeps working).

        ``get(old)`` returns the entry of ``name``; :meth:`names` lists ``name`` only; :meth:`aliases` maps old to new.
        """
        old = old.strip().lower().replace("-", "_")
        if name not in self._entries:
            raise ValueError(f"{self.kind} {name!r} is not registered, so {old!r} cannot stand for it")
        if old in self._entries or old in self._aliases:
            raise ValueError(f"{self.kind} {old!r} is already registered")
        self._aliases[old] = name

    def aliases(self) -> dict[str, str]:
        """Old names and the registered names they stand for."""
        return dict(self._aliases)

    def canonical(self, name: str) -> str:
        """The registered name that ``name`` (a name or an alias, any case, "-" or "_") stands for."""
        key = name.strip().lower().replace("-", "_")
        key = self._aliases.get(key, key)
        if key in self._entries:
            return key
        raise ValueError(self.unknown_message(name))

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def get(self, name: str) -> T:
        """The entry called ``name``; ``ValueError`` listing the known names if there is none."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} must be given by name (a str), got {type(name).__name__}")
        return self._entries[self.canonical(name)]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name.lower(), [*self._entries, *self._aliases], n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"Unknown {self.kind} {name!r}.{hint} Known {_plural(self.kind)}: {', '.join(self.names())}."

    def resolve(self, spec: str | T) -> T:
        """A registered entry by name, or ``spec`` itself when it is already a callable/object."""
        if isinstance(spec, str):
            return self.get(spec)
        if callable(spec):
            return spec
        raise TypeError(
            f"{self.kind} must be a name ({', '.join(self.names())}) or a callable, got {type(spec).__name__}"
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.strip().lower().replace("-", "_")
        return key in self._entries or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def callable_name(fn: Callable) -> str:
    """A readable name for a user-supplied callable (for configs, logs and error messages)."""
    return getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", None) or repr(fn)


def _plural(kind: str) -> str:
    return kind + ("es" if kind.endswith("s") else "s")

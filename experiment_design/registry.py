"""A name → class table for plug-ins (oracles, models, strategies)."""

from __future__ import annotations

from collections.abc import Callable


class Registry:
    """Plug-in table filled by a class decorator.

    Args:
        kind: What is registered, for error messages (``"strategy"``).

    Example:
        >>> STRATEGIES = Registry("strategy")
        >>> @STRATEGIES.register("random")
        ... class RandomStrategy: ...
        >>> STRATEGIES.get("random").__name__
        'RandomStrategy'

    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._table: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: make a class available under ``name``."""

        def wrap(cls: type) -> type:
            if name in self._table and self._table[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._table[name] = cls
            cls.registry_name = name
            return cls

        return wrap

    def get(self, name: str) -> type:
        """The class registered as ``name``.

        Raises:
            KeyError: Naming the known names.

        """
        try:
            return self._table[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names)}") from None

    @property
    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._table)

    def __contains__(self, name: str) -> bool:
        return name in self._table

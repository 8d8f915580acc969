"""A name → class table for plug-ins (oracles, models, strategies).

A table may name its package: on first look-up it imports every module of the
package, so a new plug-in is one file with its decorator, nothing else to
edit. Plug-ins outside the packages (a user's own model) are imported by
:func:`load_plugins`, which ``RunConfig.plugins`` drives.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType


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

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind, self.package = kind, package
        self._table: dict[str, type] = {}
        self._discovered = package is None

    def _discover(self) -> None:
        """Import every module of the package once (each registers its plug-ins)."""
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

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
        if name not in self._table:
            self._discover()
        try:
            return self._table[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names)}") from None

    @property
    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._discover()
        return sorted(self._table)

    def __contains__(self, name: str) -> bool:
        if name not in self._table:
            self._discover()
        return name in self._table


def load_plugins(plugins: Iterable[str]) -> list[ModuleType]:
    """Import plug-in modules so that their decorators register them.

    Args:
        plugins: Module names (``mylab.models``) or paths of ``.py`` files; a file is imported
            once per process under a name derived from its absolute path.

    Returns:
        The plug-in modules (a caller that ships objects to other processes may need them).

    Raises:
        ValueError: A file that does not exist or a module that cannot be imported, by name.
    """
    modules = []
    for plugin in plugins:
        if plugin.endswith(".py"):
            path = Path(plugin).resolve()
            if not path.is_file():
                raise ValueError(f"plugin {plugin}: no such file")
            name = f"cslab_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
            if name not in sys.modules:
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except Exception:
                    del sys.modules[name]
                    raise
            modules.append(sys.modules[name])
        else:
            try:
                modules.append(importlib.import_module(plugin))
            except ImportError as exc:
                raise ValueError(f"plugin {plugin}: cannot import it ({exc})") from None
    return modules

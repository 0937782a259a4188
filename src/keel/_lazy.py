"""Package exports that load their module on first use.

A package lists ``name -> module`` and gets a module ``__getattr__`` (PEP 562):
importing the package stays cheap, and each name is imported once and then
kept in the package's globals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``package`` that imports ``exports[name]`` on first access."""
    namespace = vars(import_module(package))

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__

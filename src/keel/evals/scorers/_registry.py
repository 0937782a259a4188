"""The one registry of scorer factories, by name, and ``build`` from a suite's spec.

Built-ins, the LLM judge, ``register_custom`` callables and third-party
plugins (the ``keel.scorers`` entry-point group) all register through
``register``. Nothing is imported until the registry is first used: the
built-in modules, then ``keel.evals.scorers.judge`` when it is present, then
the entry points.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from keel.evals.base import Scorer, ScorerFactory
from keel.evals.scorers._base import ScorerConfigError, validation_problems

_BUILTIN_MODULES = (
    "keel.evals.scorers._python",
    "keel.evals.scorers._text",
    "keel.evals.scorers._json",
    "keel.evals.scorers._similarity",
    "keel.evals.scorers._limits",
)
# Written beside this package by the judge work; registers its scorers when present.
_JUDGE_MODULE = "keel.evals.scorers.judge"
ENTRY_POINT_GROUP = "keel.scorers"


class _Registry:
    def __init__(self) -> None:
        self.factories: dict[str, ScorerFactory] = {}
        self.loaded = False

    def load(self) -> None:
        if self.loaded:
            return
        # Set first: the modules imported below call ``register``, which calls ``load``.
        self.loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        try:
            importlib.import_module(_JUDGE_MODULE)
        except ModuleNotFoundError as exc:
            if exc.name != _JUDGE_MODULE:  # the judge exists but one of its imports is missing
                raise
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                entry.load()
            except Exception as exc:
                raise ScorerConfigError(
                    [("", f"scorer plugin {entry.name!r} ({entry.value}) failed to load: {exc}")]
                ) from exc


_REGISTRY = _Registry()

FactoryT = Callable[[Mapping[str, Any]], Scorer]


def register(name: str, *, replace: bool = False) -> Callable[[FactoryT], FactoryT]:
    """Register a scorer factory under ``name`` (the suite's ``type``)::

        @register("my_scorer")
        def my_scorer(options: Mapping[str, Any]) -> Scorer: ...

    The factory gets the spec without ``type`` (``threshold``, ``name`` and its
    options) and should validate it with a ``ScorerOptions`` model
    (``parse_options``). A name taken already is an error unless ``replace``.
    """
    if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise ValueError(f"scorer name {name!r}: use letters, digits, '_', '-' and '.'")

    def decorator(factory: FactoryT) -> FactoryT:
        _REGISTRY.load()
        if name in _REGISTRY.factories and not replace:
            raise ValueError(f"a scorer named {name!r} is already registered")
        _REGISTRY.factories[name] = factory
        return factory

    return decorator


def known() -> list[str]:
    """Every registered scorer type, sorted."""
    _REGISTRY.load()
    return sorted(_REGISTRY.factories)


def build(spec: Mapping[str, Any], *, where: str = "") -> Scorer:
    """The scorer a suite's spec describes: ``{"type": "exact", "threshold": 1, ...}``.

    Raises ``ScorerConfigError`` with each problem's path under ``where``
    (``scorers[2].type: unknown scorer 'exakt'; known: ...``).
    """
    _REGISTRY.load()
    if not isinstance(spec, Mapping):
        raise ScorerConfigError([(where, "a scorer must be a mapping with a 'type'")])
    kind = spec.get("type")
    names = ", ".join(known())
    if kind is None:
        raise ScorerConfigError([(_at(where, "type"), f"required; known: {names}")])
    factory = _REGISTRY.factories.get(kind) if isinstance(kind, str) else None
    if factory is None:
        raise ScorerConfigError([(_at(where, "type"), f"unknown scorer {kind!r}; known: {names}")])
    options = {key: value for key, value in spec.items() if key != "type"}
    try:
        scorer = factory(options)
    except ScorerConfigError as exc:
        raise exc.under(where) from None
    except ValidationError as exc:  # a plugin validating without parse_options
        raise ScorerConfigError(validation_problems(exc)).under(where) from None
    except (TypeError, ValueError) as exc:
        raise ScorerConfigError([(where, f"{kind}: {exc}")]) from exc
    if not isinstance(getattr(scorer, "name", None), str) or not callable(
        getattr(scorer, "score", None)
    ):
        raise ScorerConfigError([(where, f"{kind}: its factory did not return a scorer")])
    return scorer


def _at(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field

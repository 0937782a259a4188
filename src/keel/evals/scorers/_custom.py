"""Plain Python callables as scorers: ``CallableScorer`` and ``register_custom``."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from keel.evals.base import CustomScore, Score, Scorer, ScoringCase
from keel.evals.scorers._base import (
    ScorerOptions,
    ScoringError,
    Threshold,
    parse_options,
)
from keel.evals.scorers._registry import register


class CallableScorer:
    """A ``CustomScore`` function as a scorer.

    The function returns a ``Score``; with a ``threshold``, ``passed`` is
    recomputed as ``value >= threshold``. A value outside [0, 1] or a result
    that is not a ``Score`` is a ``ScoringError``.
    """

    def __init__(self, name: str, fn: CustomScore, threshold: float | None = None) -> None:
        self.name = name
        self.fn = fn
        self.threshold = threshold

    async def score(self, case: ScoringCase) -> Score:
        result: Any = self.fn(case)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, Score):
            raise ScoringError(
                f"scorer {self.name!r} returned {type(result).__name__}, not a Score"
            )
        if not (math.isfinite(result.value) and 0.0 <= result.value <= 1.0):
            raise ScoringError(f"scorer {self.name!r} returned value {result.value}, not in [0, 1]")
        if self.threshold is None:
            return result
        return Score(result.value, result.value >= self.threshold, result.detail)


class CustomOptions(ScorerOptions):
    threshold: Threshold | None = None


def register_custom(
    name: str, fn: CustomScore, threshold: float | None = None, *, replace: bool = False
) -> None:
    """Register ``fn`` (``ScoringCase -> Score``, sync or async) as scorer type ``name``.

    ``threshold`` (or the suite's ``threshold`` for it) recomputes ``passed``
    as ``value >= threshold``; without one the function's own ``passed`` stands.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} is not in [0, 1]")

    def factory(options: Mapping[str, Any]) -> Scorer:
        opts = parse_options(CustomOptions, options)
        chosen = opts.threshold if opts.threshold is not None else threshold
        return CallableScorer(opts.name or name, fn, chosen)

    register(name, replace=replace)(factory)

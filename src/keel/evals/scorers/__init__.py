"""Scorers: one registry of named scorer factories, the built-ins, custom callables.

A suite lists scorers as specs — ``{"type": "rouge_l", "threshold": 0.4}`` —
and ``build`` turns each into a ``Scorer`` (``keel.evals.base``), validating
its options with a pydantic model per scorer (unknown options are errors that
name the field). Built-ins: exact, contains, icontains, regex, json_valid,
json_schema, numeric, levenshtein, rouge_l, bleu, embedding_similarity,
latency, cost, and ``python`` (a function by dotted path). Every value is in
[0, 1]; see docs/evals-scorers.md for each scorer's options and pass rule.

Everything registers through ``register``: the built-ins, the LLM judge
(``keel.evals.scorers.judge``, imported by the registry when present),
``register_custom`` callables and plugins in the ``keel.scorers`` entry-point
group. The registry loads them on first use, not at import; heavy libraries
(rapidfuzz, jsonschema) load inside the scorer that needs them.

May import ``keel.evals.base`` and ``keel.errors``; never ``keel.api``,
``keel.cli`` or the runner.
"""

from __future__ import annotations

from keel.evals.scorers._base import (
    ScorerConfigError,
    ScorerOptions,
    ScoringError,
    Threshold,
    parse_options,
)
from keel.evals.scorers._custom import CallableScorer, register_custom
from keel.evals.scorers._registry import ENTRY_POINT_GROUP, build, known, register

__all__ = [
    "ENTRY_POINT_GROUP",
    "CallableScorer",
    "ScorerConfigError",
    "ScorerOptions",
    "ScoringError",
    "Threshold",
    "build",
    "known",
    "parse_options",
    "register",
    "register_custom",
]

"""Evals: golden datasets, scorers, the LLM judge, runs, comparison and the CI gate.

Owns the dataset file format (JSONL/YAML examples versioned by content hash,
``dataset``), the scorer registry and built-in scorers (``scorers``), the
judge and its calibration, running a suite through the gateway, comparing a
candidate with a baseline, the gate's verdict and its reports. The shared
vocabulary — ``Example``, ``CallResult``, ``GatewayClient``, ``ScoringCase``,
``Score``, ``Scorer`` — is in ``base``.

Domain code: it reaches models only through a ``GatewayClient`` and the
store only through the repositories it is handed. May import ``keel.errors``,
``keel.config``, ``keel.prompts`` and ``keel.store``; never ``keel.api`` or
``keel.cli``, which call into it. Importing it imports nothing but this
file: each name below loads its module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports

if TYPE_CHECKING:
    from keel.evals.base import (
        CallResult,
        CustomScore,
        Example,
        GatewayClient,
        Score,
        Scorer,
        ScorerFactory,
        ScoringCase,
    )
    from keel.evals.dataset import (
        Dataset,
        DatasetError,
        DatasetProblem,
        append_example,
        content_hash,
        example_from_trace,
        example_to_dict,
        load_dataset,
    )
    from keel.evals.scorers import ScorerConfigError, ScoringError

# name -> the module that defines it. To export a name, add it here, to the
# TYPE_CHECKING imports above and to __all__ (a test checks the three agree).
_EXPORTS = {
    # base: the shared vocabulary
    "CallResult": "keel.evals.base",
    "CustomScore": "keel.evals.base",
    "Example": "keel.evals.base",
    "GatewayClient": "keel.evals.base",
    "Score": "keel.evals.base",
    "Scorer": "keel.evals.base",
    "ScorerFactory": "keel.evals.base",
    "ScoringCase": "keel.evals.base",
    # dataset
    "Dataset": "keel.evals.dataset",
    "DatasetError": "keel.evals.dataset",
    "DatasetProblem": "keel.evals.dataset",
    "append_example": "keel.evals.dataset",
    "content_hash": "keel.evals.dataset",
    "example_from_trace": "keel.evals.dataset",
    "example_to_dict": "keel.evals.dataset",
    "load_dataset": "keel.evals.dataset",
    # scorers (the registry itself: keel.evals.scorers.build / register / ...)
    "ScorerConfigError": "keel.evals.scorers",
    "ScoringError": "keel.evals.scorers",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "CallResult",
    "CustomScore",
    "Dataset",
    "DatasetError",
    "DatasetProblem",
    "Example",
    "GatewayClient",
    "Score",
    "Scorer",
    "ScorerConfigError",
    "ScorerFactory",
    "ScoringCase",
    "ScoringError",
    "append_example",
    "content_hash",
    "example_from_trace",
    "example_to_dict",
    "load_dataset",
]

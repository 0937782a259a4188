"""Costs: prices, the cost of each call, and monthly projections.

Owns where a deployment's price comes from (keel.yaml ``prices:`` first, then
the genai-prices table bundled with the package, offline), pricing one call
from its usage with OpenTelemetry token semantics (input includes cached
tokens, priced as a subset, never twice), and projecting a month's spend
from an observed mix. An unknown price is ``None``, never zero.

Imports ``keel.config``, ``keel.telemetry.record`` and ``keel.errors`` only.
Nothing is loaded at import: genai-prices is imported on first use or by
``PriceBook.warm``.
"""

from keel.costs._book import PriceBook
from keel.costs._projection import (
    SECONDS_PER_MONTH,
    MixEntry,
    ModelProjection,
    Projection,
    project_monthly,
)
from keel.costs._rates import PriceInfo, Source

__all__ = [
    "SECONDS_PER_MONTH",
    "MixEntry",
    "ModelProjection",
    "PriceBook",
    "PriceInfo",
    "Projection",
    "Source",
    "project_monthly",
]

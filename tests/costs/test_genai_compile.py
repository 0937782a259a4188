"""Compiled rates agree with genai-prices for every price in its bundled table."""

from __future__ import annotations

import random

from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice

from keel.costs._genai import _Compiled, _total
from keel.costs._rates import Tokens


def test_compiled_rates_equal_genai_prices_everywhere() -> None:
    rng = random.Random(7)
    mismatches = []
    for provider in get_snapshot().providers:
        for model in provider.models:
            if isinstance(model.prices, ModelPrice):
                variants = [model.prices]
            else:
                variants = [c.prices for c in model.prices]
            for price in variants:
                compiled = _Compiled.of(price)
                for _ in range(2):  # input up to 300k crosses every tier threshold
                    total = rng.randint(0, 300_000)
                    cached = rng.randint(0, total)
                    write = rng.randint(0, total - cached)
                    tokens = Tokens(total - cached - write, cached, write, rng.randint(0, 8000))
                    exact = float(_total(price, tokens))
                    got = compiled.cost(tokens)
                    if got is None or abs(got - exact) > 1e-12 * max(1.0, exact):
                        mismatches.append((provider.id, model.id, tokens, got, exact))
    assert not mismatches, mismatches[:5]

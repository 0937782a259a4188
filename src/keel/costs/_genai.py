"""The seam to genai-prices: find a model, compile its price into ``Rates``.

``genai_prices`` takes ~0.3 s to import, so it is imported inside these
functions on first use, never at module import. Only its bundled snapshot is
read; no update function is ever called, so pricing never touches the network.

Why compile: ``ModelPrice.calc_price`` costs ~150 µs a call, too slow to run
per request. Under one price (no tier crossed) genai-prices' total is linear
in the token counts, so we ask genai-prices itself for the price of one token
of each kind and multiply. Asking it, instead of reading its price keys,
keeps its rules (which keys exist, what an unpriced cache read falls back to,
fixed per-request fees) in one place: theirs. A request past a tier
threshold is priced by genai-prices directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from keel.costs._rates import PriceInfo, Rates, Tokens

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice

log = logging.getLogger("keel.costs")

_PER = 1_000_000


def find(
    model: str, *, provider_id: str | None = None, provider_api_url: str | None = None
) -> GenaiPricer | None:
    """The pricer for ``model`` at a provider named by id or API URL; None if unknown."""
    import genai_prices

    empty = genai_prices.Usage()
    try:
        if provider_id is not None:
            found = genai_prices.calc_price(empty, model, provider_id=provider_id)
        else:
            found = genai_prices.calc_price(empty, model, provider_api_url=provider_api_url)
    except LookupError:
        return None
    try:
        return GenaiPricer(found.model, f"{found.provider.id}/{found.model.id}")
    except ValueError as exc:
        # genai-prices refused our probe usage for this model (a price shape
        # we cannot express); unknown is honest, zero would not be.
        log.warning("cannot price %s from genai-prices: %s", model, exc)
        return None


class GenaiPricer:
    """One genai-prices model, compiled for every price it may switch between."""

    __slots__ = ("_by_price", "_model", "_static", "matched")

    def __init__(self, model: ModelInfo, matched: str) -> None:
        from genai_prices.types import ModelPrice

        self.matched = matched
        self._model = model
        self._static: _Compiled | None = None
        self._by_price: dict[int, _Compiled] = {}
        if isinstance(model.prices, ModelPrice):
            self._static = _Compiled.of(model.prices)
        else:
            # Prices that change by date or time of day (e.g. off-peak
            # discounts): compile each now, pick the one in force per request.
            # _Compiled holds its ModelPrice, so these ids stay unique.
            for conditional in model.prices:
                self._by_price[id(conditional.prices)] = _Compiled.of(conditional.prices)

    def current(self) -> _Compiled:
        if self._static is not None:
            return self._static
        price = self._model.get_prices(datetime.now(UTC))
        # Without a price context get_prices returns one of the objects
        # compiled above; compiling here only guards a change in the library.
        return self._by_price.get(id(price)) or _Compiled.of(price)

    def cost(self, tokens: Tokens) -> float | None:
        try:
            return self.current().cost(tokens)
        except ValueError:  # a price genai-prices itself refuses: unknown, never a crash
            return None

    def info(self) -> PriceInfo:
        compiled = self.current()
        return PriceInfo.of(
            "genai-prices",
            self.matched,
            compiled.rates,
            tiered=compiled.tier_start is not None,
            time_varying=self._static is None,
        )


@dataclass(frozen=True, slots=True)
class _Compiled:
    price: ModelPrice
    rates: Rates
    tier_start: int | None  # input tokens above which a tier's price applies

    @classmethod
    def of(cls, price: ModelPrice) -> _Compiled:
        from genai_prices.types import TieredPrices

        starts = [
            tier.start
            for value in vars(price).values()
            if isinstance(value, TieredPrices)
            for tier in value.tiers
        ]
        # One-token probes stay below every tier in the bundled data (the
        # lowest threshold is 32k), so they read the base rates.
        base = _total(price, Tokens(0, 0, 0, 0))

        def per_mtok(uncached: int, cached: int, write: int, output: int) -> float:
            one = Tokens(uncached, cached, write, output)
            return float((_total(price, one) - base) * _PER)

        rates = Rates(
            input_per_mtok=per_mtok(1, 0, 0, 0),
            output_per_mtok=per_mtok(0, 0, 0, 1),
            cached_input_per_mtok=per_mtok(0, 1, 0, 0),
            cache_write_per_mtok=per_mtok(0, 0, 1, 0),
            per_request_usd=float(base),
        )
        return cls(price, rates, min(starts) if starts else None)

    def cost(self, tokens: Tokens) -> float:
        if self.tier_start is None or tokens.input <= self.tier_start:
            return self.rates.cost(tokens)
        # Past a threshold a whole request is repriced (genai-prices' "cliff"
        # tiers); let genai-prices do it rather than re-implement tiers.
        return float(_total(self.price, tokens))


def _total(price: ModelPrice, tokens: Tokens) -> Decimal:
    """genai-prices' total for our token buckets, in its usage terms."""
    import genai_prices

    usage = genai_prices.Usage(
        input_tokens=tokens.input,  # includes both cache counts, as ours does
        cache_read_tokens=tokens.cached,
        cache_write_tokens=tokens.cache_write,
        output_tokens=tokens.output,
    )
    return price.calc_price(usage)["total_price"]

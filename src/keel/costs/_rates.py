"""Linear per-token prices, and the one place usage is made consistent.

Every price Keel can evaluate quickly is a ``Rates``: four per-million-token
rates and an optional fixed fee per request. Config prices are one directly;
genai-prices models are compiled into one (see ``_genai``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from keel.config import Price
from keel.telemetry.record import Usage

Source = Literal["config", "genai-prices"]

_PER = 1_000_000


@dataclass(frozen=True, slots=True)
class Tokens:
    """Usage split into disjoint buckets, each priced once.

    ``uncached + cached + cache_write`` is the request's input (OTel: input
    includes cached tokens and cache writes), so no token is counted twice.
    """

    uncached: int
    cached: int
    cache_write: int
    output: int

    @property
    def input(self) -> int:
        return self.uncached + self.cached + self.cache_write


def split(usage: Usage) -> Tokens:
    """Our ``Usage`` as disjoint buckets, clamped to be self-consistent.

    A negative count is an upstream or adapter bug; it becomes 0 so it can
    never make a cost negative. When cached tokens and cache writes together
    exceed the input, the input total wins and the subsets are cut to fit:
    ``input_tokens`` is the number every record, dashboard and budget sums,
    so the cost prices exactly those tokens and never more than were
    recorded. (An adapter that forgot to add Anthropic's cache counts to the
    input is the usual cause; the fix belongs there, not here.)
    """
    total = max(usage.input_tokens, 0)
    cached = min(max(usage.cached_input_tokens, 0), total)
    write = min(max(usage.cache_write_tokens, 0), total - cached)
    return Tokens(total - cached - write, cached, write, max(usage.output_tokens, 0))


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens of each kind, plus a fixed USD fee per request."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float
    cache_write_per_mtok: float
    per_request_usd: float = 0.0

    @classmethod
    def from_price(cls, price: Price) -> Rates:
        """A keel.yaml price; cached input and cache writes default to the input rate."""
        cached = price.cached_input_per_mtok
        write = price.cache_write_per_mtok
        return cls(
            input_per_mtok=price.input_per_mtok,
            output_per_mtok=price.output_per_mtok,
            cached_input_per_mtok=price.input_per_mtok if cached is None else cached,
            cache_write_per_mtok=price.input_per_mtok if write is None else write,
        )

    def cost(self, tokens: Tokens) -> float:
        return (
            self.per_request_usd
            + (
                tokens.uncached * self.input_per_mtok
                + tokens.cached * self.cached_input_per_mtok
                + tokens.cache_write * self.cache_write_per_mtok
                + tokens.output * self.output_per_mtok
            )
            / _PER
        )


@dataclass(frozen=True, slots=True)
class PriceInfo:
    """What a deployment costs, for display (``keel`` CLI, docs, dashboards)."""

    source: Source
    matched: str  # the keel.yaml key, or genai-prices' "provider/model" ids
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float
    cache_write_per_mtok: float
    per_request_usd: float = 0.0
    # Rates shown are the base tier; requests above a token threshold cost more.
    tiered: bool = False
    # Rates shown are the ones in force now (e.g. off-peak discounts).
    time_varying: bool = False

    @classmethod
    def of(
        cls,
        source: Source,
        matched: str,
        rates: Rates,
        *,
        tiered: bool = False,
        time_varying: bool = False,
    ) -> PriceInfo:
        return cls(
            source=source,
            matched=matched,
            input_per_mtok=rates.input_per_mtok,
            output_per_mtok=rates.output_per_mtok,
            cached_input_per_mtok=rates.cached_input_per_mtok,
            cache_write_per_mtok=rates.cache_write_per_mtok,
            per_request_usd=rates.per_request_usd,
            tiered=tiered,
            time_varying=time_varying,
        )

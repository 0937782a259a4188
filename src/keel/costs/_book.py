"""PriceBook: which price applies to a deployment, and what a call cost."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol, assert_never

from keel.config import (
    AnthropicProvider,
    Deployment,
    KeelConfig,
    OpenAICompatProvider,
    SimulatorProvider,
)
from keel.costs import _genai
from keel.costs._rates import PriceInfo, Rates, Tokens, split
from keel.telemetry.record import Usage

log = logging.getLogger("keel.costs")


class _Pricer(Protocol):
    def cost(self, tokens: Tokens) -> float | None: ...

    def info(self) -> PriceInfo: ...


@dataclass(frozen=True, slots=True)
class _ConfigPricer:
    key: str
    rates: Rates

    def cost(self, tokens: Tokens) -> float | None:
        return self.rates.cost(tokens)

    def info(self) -> PriceInfo:
        return PriceInfo.of("config", self.key, self.rates)


class PriceBook:
    """Prices for the configured deployments ("provider/model").

    A deployment's price is, first found: ``prices[deployment]`` in keel.yaml,
    ``prices[model]``, then genai-prices' bundled table (offline). Simulator
    deployments only ever use keel.yaml prices. A price that cannot be found
    is unknown: ``cost`` returns None, never 0.

    Lookups happen on first use and are cached, misses included; call
    ``warm`` off the request path at start so no request pays for them.
    """

    def __init__(self, config: KeelConfig) -> None:
        # Nothing is looked up here: building the gateway must stay fast.
        self._config = config
        self._deployments = {d.name: d for m in config.models for d in m.deployments}
        self._pricers: dict[str, _Pricer | None] = {}
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Resolve every configured deployment (loads genai-prices if needed).

        Blocking (~0.5 s when genai-prices is needed); run it in a thread.
        """
        for name in self._deployments:
            self._pricer(name)

    def cost(self, deployment: str, usage: Usage) -> float | None:
        """The call's cost in USD; None when the deployment's price is unknown.

        ``usage.input_tokens`` includes cached tokens and cache writes; they
        are priced at their own rates as part of it, never on top of it.
        """
        try:
            pricer = self._pricers[deployment]
        except KeyError:
            pricer = self._pricer(deployment)
        return None if pricer is None else pricer.cost(split(usage))

    def describe(self, deployment: str) -> PriceInfo | None:
        """Per-million-token rates for display, and where they came from."""
        pricer = self._pricer(deployment)
        return None if pricer is None else pricer.info()

    def _pricer(self, name: str) -> _Pricer | None:
        if name in self._pricers:
            return self._pricers[name]
        with self._lock:  # warm() and a request may race to the same lookup
            if name in self._pricers:
                return self._pricers[name]
            pricer = self._resolve(name)
            # Only configured names are cached, so stray names cannot grow the map.
            if name in self._deployments:
                self._pricers[name] = pricer
            return pricer

    def _resolve(self, name: str) -> _Pricer | None:
        deployment = self._deployments.get(name) or self._parse(name)
        prices = self._config.prices
        for key in (name, deployment.model if deployment else None):
            if key is not None and key in prices:
                return _ConfigPricer(key, Rates.from_price(prices[key]))
        if deployment is None:
            return None
        pricer = self._from_table(deployment)
        if pricer is None and name in self._deployments:  # once: configured names are cached
            log.warning(
                "no price for %s: its cost is recorded as unknown; add it under prices: "
                "in keel.yaml",
                name,
            )
        return pricer

    def _from_table(self, deployment: Deployment) -> _Pricer | None:
        provider = self._config.providers.get(deployment.provider)
        if isinstance(provider, OpenAICompatProvider):
            # genai-prices recognises providers by their API URL.
            return _genai.find(deployment.model, provider_api_url=provider.base_url)
        if isinstance(provider, AnthropicProvider):
            return _genai.find(deployment.model, provider_id="anthropic")
        if isinstance(provider, SimulatorProvider) or provider is None:
            return None  # the simulator serves no real model; only keel.yaml prices it
        assert_never(provider)  # a new provider kind must say where its prices come from

    def _parse(self, name: str) -> Deployment | None:
        """A "provider/model" name outside the config, if its provider is configured."""
        provider, sep, model = name.partition("/")
        if not sep or not model or provider not in self._config.providers:
            return None
        return Deployment(provider=provider, model=model)

"""PriceBook: where prices come from, and what one call costs."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import genai_prices
import pytest

from keel.config import KeelConfig, parse_config
from keel.costs import PriceBook, PriceInfo
from keel.telemetry.record import Usage

OPENAI = "https://api.openai.com/v1"


def config(deployments: dict[str, str], prices: dict[str, Any] | None = None) -> KeelConfig:
    """One alias over ``{"provider/model": ...}``; providers: oa, an, local, sim."""
    return parse_config(
        {
            "providers": {
                "oa": {"kind": "openai_compat", "base_url": OPENAI},
                "an": {"kind": "anthropic"},
                "local": {"kind": "openai_compat", "base_url": "http://127.0.0.1:8000/v1"},
                "sim": {"kind": "simulator"},
            },
            "models": [
                {
                    "alias": "a",
                    "deployments": [
                        {"provider": name.split("/", 1)[0], "model": name.split("/", 1)[1]}
                        for name in deployments
                    ],
                }
            ],
            "prices": prices or {},
        }
    )


def book(*names: str, **prices: dict[str, float]) -> PriceBook:
    return PriceBook(config(dict.fromkeys(names, ""), prices))


def genai_usage(usage: Usage) -> genai_prices.Usage:
    return genai_prices.Usage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
    )


CHEAP = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
USAGE = Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=100)


# --- where a price comes from ----------------------------------------------


def test_config_price_by_deployment_wins_over_model_key_and_genai_prices() -> None:
    prices = PriceBook(
        config(
            {"oa/gpt-4o-mini": ""},
            {"oa/gpt-4o-mini": CHEAP, "gpt-4o-mini": {"input_per_mtok": 9, "output_per_mtok": 9}},
        )
    )
    assert prices.cost("oa/gpt-4o-mini", Usage(input_tokens=1000, output_tokens=500)) == (
        pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    )
    info = prices.describe("oa/gpt-4o-mini")
    assert info is not None
    assert (info.source, info.matched) == ("config", "oa/gpt-4o-mini")


def test_config_price_by_model_name() -> None:
    prices = PriceBook(config({"oa/gpt-4o-mini": "", "sim/sim-fast": ""}, {"gpt-4o-mini": CHEAP}))
    assert prices.cost("oa/gpt-4o-mini", Usage(input_tokens=1_000_000)) == pytest.approx(1.0)
    info = prices.describe("oa/gpt-4o-mini")
    assert info is not None
    assert (info.source, info.matched) == ("config", "gpt-4o-mini")


@pytest.mark.parametrize(
    "usage",
    [
        USAGE,
        Usage(input_tokens=123_456, output_tokens=7_890),
        Usage(input_tokens=5000, cached_input_tokens=5000, cache_write_tokens=0, output_tokens=1),
        Usage(),
    ],
)
def test_openai_model_by_api_url_matches_genai_prices(usage: Usage) -> None:
    expected = genai_prices.calc_price(genai_usage(usage), "gpt-4o-mini", provider_api_url=OPENAI)
    assert book("oa/gpt-4o-mini").cost("oa/gpt-4o-mini", usage) == pytest.approx(
        float(expected.total_price), rel=1e-12, abs=1e-15
    )


def test_describe_genai_prices_rates() -> None:
    expected = genai_prices.calc_price(genai_prices.Usage(), "gpt-4o-mini", provider_api_url=OPENAI)
    info = book("oa/gpt-4o-mini").describe("oa/gpt-4o-mini")
    assert isinstance(info, PriceInfo)
    assert (info.source, info.matched) == ("genai-prices", "openai/gpt-4o-mini")
    table = expected.model_price
    assert (info.input_per_mtok, info.output_per_mtok, info.cached_input_per_mtok) == (
        float(str(table.input_mtok)),
        float(str(table.output_mtok)),
        float(str(table.cache_read_mtok)),
    )
    assert not info.tiered and not info.time_varying


# --- token semantics ---------------------------------------------------------


def test_cached_tokens_are_a_priced_subset_of_input() -> None:
    price = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cached_input_per_mtok": 0.3}
    prices = book("sim/sim-fast", **{"sim-fast": price})
    cached = prices.cost("sim/sim-fast", Usage(input_tokens=1000, cached_input_tokens=400))
    uncached = prices.cost("sim/sim-fast", Usage(input_tokens=1000))
    assert cached is not None and uncached is not None
    assert cached < uncached
    assert cached == pytest.approx((600 * 3.0 + 400 * 0.3) / 1e6)


def test_genai_prices_cached_tokens_are_a_priced_subset_of_input() -> None:
    prices = book("oa/gpt-4o-mini")
    rates = prices.describe("oa/gpt-4o-mini")
    assert rates is not None
    cached = prices.cost("oa/gpt-4o-mini", Usage(input_tokens=1000, cached_input_tokens=400))
    uncached = prices.cost("oa/gpt-4o-mini", Usage(input_tokens=1000))
    assert cached is not None and uncached is not None
    assert cached < uncached
    assert cached == pytest.approx(
        (600 * rates.input_per_mtok + 400 * rates.cached_input_per_mtok) / 1e6
    )


def test_cache_rates_default_to_the_input_rate() -> None:
    prices = book("sim/sim-fast", **{"sim-fast": CHEAP})
    plain = prices.cost("sim/sim-fast", Usage(input_tokens=1000))
    cached = Usage(input_tokens=1000, cached_input_tokens=300, cache_write_tokens=200)
    assert prices.cost("sim/sim-fast", cached) == plain


def test_anthropic_cache_writes_are_priced() -> None:
    model = "claude-sonnet-4-5"
    prices = book(f"an/{model}")
    usage = Usage(
        input_tokens=3000, cached_input_tokens=1000, cache_write_tokens=1500, output_tokens=50
    )
    expected = genai_prices.calc_price(genai_usage(usage), model, provider_id="anthropic")
    got = prices.cost(f"an/{model}", usage)
    assert got == pytest.approx(float(expected.total_price), rel=1e-12)
    info = prices.describe(f"an/{model}")
    assert info is not None
    assert info.cache_write_per_mtok > info.input_per_mtok > info.cached_input_per_mtok
    no_writes = prices.cost(
        f"an/{model}", Usage(input_tokens=3000, cached_input_tokens=1000, output_tokens=50)
    )
    assert no_writes is not None and got is not None and got > no_writes


def test_tiered_prices_are_priced_by_genai_prices_above_the_threshold() -> None:
    model = "claude-sonnet-4-5"  # dearer past 200k input tokens
    prices = book(f"an/{model}")
    info = prices.describe(f"an/{model}")
    assert info is not None and info.tiered
    usage = Usage(input_tokens=250_000, cached_input_tokens=10_000, output_tokens=1000)
    expected = genai_prices.calc_price(genai_usage(usage), model, provider_id="anthropic")
    assert prices.cost(f"an/{model}", usage) == pytest.approx(float(expected.total_price))
    base_rate = (240_000 * info.input_per_mtok + 10_000 * info.cached_input_per_mtok) / 1e6
    assert float(expected.total_price) > base_rate + 1000 * info.output_per_mtok / 1e6


def test_time_varying_prices_use_the_price_in_force() -> None:
    url = "https://api.deepseek.com/v1"
    prices = PriceBook(
        parse_config(
            {
                "providers": {"ds": {"kind": "openai_compat", "base_url": url}},
                "models": [
                    {"alias": "a", "deployments": [{"provider": "ds", "model": "deepseek-chat"}]}
                ],
            }
        )
    )

    def now() -> float:
        return float(
            genai_prices.calc_price(
                genai_usage(USAGE), "deepseek-chat", provider_api_url=url
            ).total_price
        )

    before = now()
    got = prices.cost("ds/deepseek-chat", USAGE)
    after = now()  # the off-peak boundary may pass between the two
    assert got in (pytest.approx(before), pytest.approx(after))


def test_inconsistent_usage_is_clamped_never_negative() -> None:
    prices = book("sim/sim-fast", **{"sim-fast": {**CHEAP, "cached_input_per_mtok": 0.5}})
    over = prices.cost("sim/sim-fast", Usage(input_tokens=1000, cached_input_tokens=2000))
    assert over == prices.cost("sim/sim-fast", Usage(input_tokens=1000, cached_input_tokens=1000))
    negative = Usage(
        input_tokens=-5, cached_input_tokens=-1, cache_write_tokens=-1, output_tokens=-9
    )
    assert prices.cost("sim/sim-fast", negative) == 0.0
    assert prices.cost("oa/nothing", negative) is None


# --- unknown prices ----------------------------------------------------------


def test_unknown_model_costs_none_not_zero() -> None:
    prices = book("oa/no-such-model-anywhere", "local/llama-3-8b")
    assert prices.cost("oa/no-such-model-anywhere", USAGE) is None
    assert prices.cost("local/llama-3-8b", USAGE) is None  # genai-prices knows no such URL
    assert prices.describe("oa/no-such-model-anywhere") is None


def test_simulator_needs_a_config_price() -> None:
    # "gpt-4o-mini" is a real model name, but the simulator does not serve it.
    prices = book("sim/gpt-4o-mini")
    assert prices.cost("sim/gpt-4o-mini", USAGE) is None
    assert prices.describe("sim/gpt-4o-mini") is None


def test_unconfigured_names() -> None:
    prices = book("sim/sim-fast", **{"elsewhere/x": CHEAP})
    assert prices.cost("elsewhere/x", Usage(input_tokens=1_000_000)) == pytest.approx(1.0)
    assert prices.cost("nonsense", USAGE) is None
    assert prices.cost("oa/gpt-4o-mini", USAGE) is not None  # configured provider, any model


def test_warm_resolves_every_deployment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.costs import _genai

    prices = book("oa/gpt-4o-mini", "oa/no-such-model-anywhere", "sim/sim-fast")
    calls: list[str] = []
    real = _genai.find

    def counting(model: str, **kwargs: Any) -> Any:
        calls.append(model)
        return real(model, **kwargs)

    monkeypatch.setattr(_genai, "find", counting)
    prices.warm()
    prices.warm()
    for _ in range(3):
        prices.cost("oa/gpt-4o-mini", USAGE)
        prices.cost("oa/no-such-model-anywhere", USAGE)  # misses are cached too
    assert sorted(calls) == ["gpt-4o-mini", "no-such-model-anywhere"]


def test_genai_prices_is_imported_on_first_use_not_before() -> None:
    script = """
import sys
from keel.config import parse_config
from keel.costs import PriceBook
from keel.telemetry.record import Usage
config = parse_config({
    "providers": {
        "oa": {"kind": "openai_compat", "base_url": "https://api.openai.com/v1"},
        "sim": {"kind": "simulator"},
    },
    "models": [{"alias": "a", "deployments": [
        {"provider": "oa", "model": "gpt-4o-mini"}, {"provider": "sim", "model": "s"}]}],
    "prices": {"s": {"input_per_mtok": 1, "output_per_mtok": 1}},
})
prices = PriceBook(config)
assert "genai_prices" not in sys.modules, "imported by keel.costs or PriceBook()"
assert prices.cost("sim/s", Usage(input_tokens=10)) is not None
assert "genai_prices" not in sys.modules, "imported for a config price"
assert prices.cost("oa/gpt-4o-mini", Usage(input_tokens=10)) is not None
assert "genai_prices" in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

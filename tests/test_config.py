from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from keel.cli.main import cli
from keel.config import load_config, parse_config
from keel.errors import ConfigError

BASE = {
    "providers": {"sim": {"kind": "simulator"}},
    "models": [
        {"alias": "fast", "deployments": [{"provider": "sim", "model": "a"}], "fallbacks": []},
        {"alias": "smart", "deployments": [{"provider": "sim", "model": "b"}]},
        {"alias": "big", "deployments": [{"provider": "sim", "model": "c"}]},
    ],
}


def with_models(**changes: object) -> dict[str, object]:
    models = [dict(m) for m in BASE["models"]]  # type: ignore[attr-defined]
    models[2] = {**models[2], **changes}
    return {**BASE, "models": models}


def problem(raw: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, source="keel.yaml", environ={})
    return caught.value.message


def test_quickstart_config_is_valid() -> None:
    config = load_config(Path(__file__).parents[1] / "examples/quickstart/keel.yaml")
    assert [m.alias for m in config.models][:2] == ["fast", "smart"]


def test_unknown_fallback_alias_names_the_path() -> None:
    assert problem(with_models(fallbacks=["fats"])) == (
        'keel.yaml: models[2].fallbacks[0]: unknown alias "fats"'
    )


def test_unknown_key_is_an_error_not_ignored() -> None:
    message = problem(with_models(temprature=0.2))
    assert "models[2].temprature: unknown key" in message


def test_misplaced_provider_key_is_an_error() -> None:
    raw = {**BASE, "providers": {"sim": {"kind": "simulator", "base_url": "http://x"}}}
    assert "providers.sim.base_url: unknown key" in problem(raw)


def test_unknown_provider_kind() -> None:
    raw = {**BASE, "providers": {"sim": {"kind": "bedrock"}}}
    assert "providers.sim: unknown provider kind" in problem(raw)


def test_deployment_must_name_a_known_provider() -> None:
    raw = with_models(deployments=[{"provider": "nope", "model": "x"}])
    assert 'models[2].deployments[0].provider: unknown provider "nope"' in problem(raw)


def test_bad_number_names_field_and_expectation() -> None:
    message = problem(with_models(timeout_s=-1))
    assert "models[2].timeout_s: Input should be greater than 0" in message


def test_env_interpolation_and_missing_variable() -> None:
    raw = {
        **BASE,
        "providers": {
            "sim": {"kind": "simulator"},
            "oa": {"kind": "openai_compat", "base_url": "${BASE:-http://h/v1}", "api_key": "${K}"},
        },
    }
    config = parse_config(raw, environ={"K": "secret-value"})
    provider = config.providers["oa"]
    assert provider.base_url == "http://h/v1"  # type: ignore[union-attr]
    assert "secret-value" not in repr(config)
    assert "providers.oa.api_key: environment variable K is not set" in problem(raw)


def test_config_check_cli(tmp_path: Path) -> None:
    bad = tmp_path / "keel.yaml"
    bad.write_text(
        "providers: {sim: {kind: simulator}}\n"
        "models:\n  - alias: fast\n    deployments: [{provider: sim, model: a}]\n"
        "    fallbacks: [fats]\n"
    )
    result = CliRunner().invoke(cli, ["config", "check", str(bad)])
    assert result.exit_code == 2
    assert 'models[0].fallbacks[0]: unknown alias "fats"' in result.output

    good = Path(__file__).parents[1] / "examples/quickstart/keel.yaml"
    result = CliRunner().invoke(cli, ["config", "check", str(good)])
    assert result.exit_code == 0, result.output


def test_an_unquoted_yaml_off_means_off(tmp_path: Path) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text(
        "providers: {sim: {kind: simulator}}\n"
        "models: [{alias: fast, deployments: [{provider: sim, model: a}]}]\n"
        "telemetry: {log: {destination: off}}\n"
    )
    assert load_config(path).telemetry.log.destination == "off"


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        ({"tenant": {"rpm": -1}}, "tiers.free.tenant.rpm: Input should be greater than 0"),
        ({"user": {"tpm": "lots"}}, "tiers.free.user.tpm: Input should be a valid integer"),
        (
            {"budget": {"daily_usd": 0}},
            "tiers.free.budget.daily_usd: Input should be greater than 0",
        ),
        ({"models": ["fats"]}, 'tiers.free.models[0]: unknown alias "fats"'),
        (
            {"budget": {"on_exceed": {"downgrade": "fats"}}},
            'tiers.free.budget.on_exceed.downgrade: unknown alias "fats"',
        ),
        ({"tenant": {"rpn": 5}}, "tiers.free.tenant.rpn: unknown key"),
    ],
)
def test_bad_tiers_are_refused_naming_the_field(tier: dict[str, Any], expected: str) -> None:
    raw = yaml.safe_load((Path(__file__).parents[1] / "examples/quickstart/keel.yaml").read_text())
    raw["tiers"] = {"free": tier}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert expected in str(caught.value)

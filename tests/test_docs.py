"""The docs name every config field, CLI command and error code (they cannot drift)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from pydantic import BaseModel

import keel.errors as errors
from keel.cli.main import cli
from keel.config import (
    AlertsConfig,
    AnthropicProvider,
    BreakerConfig,
    BudgetPolicy,
    Deployment,
    KeelConfig,
    LimitsConfig,
    LogConfig,
    ModelAlias,
    OpenAICompatProvider,
    OTLPConfig,
    Price,
    RateLimits,
    RoutingConfig,
    SamplingConfig,
    ServerConfig,
    SimulatorProvider,
    TelemetryConfig,
    Tier,
    WebhookConfig,
)
from keel.experiments.spec import Cohort, Experiment, Guard, Ramp, Shadow, Variant

DOCS = Path(__file__).parents[1] / "docs"


def doc(name: str) -> str:
    return (DOCS / name).read_text()


@pytest.mark.parametrize(
    ("model", "page"),
    [
        (KeelConfig, "configuration.md"),
        (ServerConfig, "configuration.md"),
        (ModelAlias, "configuration.md"),
        (Deployment, "configuration.md"),
        (RoutingConfig, "configuration.md"),
        (BreakerConfig, "configuration.md"),
        (TelemetryConfig, "configuration.md"),
        (LogConfig, "configuration.md"),
        (SamplingConfig, "configuration.md"),
        (OTLPConfig, "configuration.md"),
        (Price, "configuration.md"),
        (Tier, "limits.md"),
        (RateLimits, "limits.md"),
        (BudgetPolicy, "limits.md"),
        (LimitsConfig, "limits.md"),
        (AlertsConfig, "limits.md"),
        (WebhookConfig, "limits.md"),
        (Experiment, "experiments.md"),
        (Variant, "experiments.md"),
        (Cohort, "experiments.md"),
        (Guard, "experiments.md"),
        (Ramp, "experiments.md"),
        (Shadow, "experiments.md"),
        (OpenAICompatProvider, "providers.md"),
        (AnthropicProvider, "providers.md"),
        (SimulatorProvider, "simulator.md"),
    ],
)
def test_every_config_field_is_documented(model: type[BaseModel], page: str) -> None:
    text = doc(page)
    missing = [
        name for name in model.model_fields if f"`{name}" not in text and f".{name}`" not in text
    ]
    assert not missing, f"{page} does not mention {missing}"


def _commands(group: click.Group, prefix: str = "keel") -> list[str]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
        else:
            found.append(path)
    return found


def test_every_cli_command_is_documented() -> None:
    text = doc("cli.md")
    missing = [c for c in _commands(cli) if f"`{c}" not in text]
    assert not missing, f"cli.md does not mention {missing}"


def _error_classes() -> list[type[errors.KeelError]]:
    found: list[type[errors.KeelError]] = []
    pending: list[type[errors.KeelError]] = [errors.KeelError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_code_is_documented() -> None:
    _commands(cli)  # loads every command module, and with them every error class
    text = doc("api.md") + doc("providers.md") + doc("keys.md")
    codes = {cls.code for cls in _error_classes()}
    missing = sorted(code for code in codes if f"`{code}`" not in text)
    assert not missing, f"docs do not mention error codes {missing}"

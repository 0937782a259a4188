"""keel.yaml: one typed model, read once at start.

Unknown keys are errors everywhere (``extra="forbid"``) so a misplaced
setting is reported with its path instead of being ignored or forwarded
upstream. ``${VAR}`` and ``${VAR:-default}`` are interpolated from the
environment before validation; secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from keel.errors import ConfigError

Seconds = Annotated[float, Field(gt=0)]
Share = Annotated[float, Field(ge=0, le=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- server -----------------------------------------------------------------


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 4000
    max_body_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024
    workers: Annotated[int, Field(ge=1)] = 1


# --- providers --------------------------------------------------------------


class Delay(Strict):
    """A latency distribution: log-normal through its median and 99th percentile."""

    p50_ms: Annotated[float, Field(ge=0)] = 0
    p99_ms: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _p99_not_below_p50(self) -> Delay:
        if self.p99_ms is not None and self.p99_ms < self.p50_ms:
            raise ValueError("p99_ms must be >= p50_ms")
        return self


class Outage(Strict):
    """The upstream fails every call from ``start_s`` for ``duration_s`` seconds
    after the simulator starts, repeating every ``every_s`` seconds if set."""

    start_s: Annotated[float, Field(ge=0)]
    duration_s: Seconds
    every_s: Seconds | None = None
    status: Annotated[int, Field(ge=400, le=599)] = 503


class ScriptedAnswer(Strict):
    pattern: str
    answer: str
    wrong_answer: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class SimulatorProvider(Strict):
    """The built-in LLM stand-in (see docs/simulator.md)."""

    kind: Literal["simulator"]
    seed: int | None = None
    latency: Delay = Delay()
    ttft: Delay = Delay()
    tokens_per_second: Annotated[float, Field(gt=0)] | None = None
    error_rate: Share = 0.0
    rate_limit_rate: Share = 0.0
    timeout_rate: Share = 0.0
    retry_after_s: Annotated[float, Field(ge=0)] = 1.0
    outages: list[Outage] = []
    answers: list[ScriptedAnswer] = []
    default_answer: str | None = None
    quality: Share = 1.0
    context_window: Annotated[int, Field(gt=0)] = 128_000
    max_output_tokens: Annotated[int, Field(gt=0)] = 4096
    embedding_dimensions: Annotated[int, Field(gt=0, le=4096)] = 256


class OpenAICompatProvider(Strict):
    kind: Literal["openai_compat"]
    base_url: str
    api_key: SecretStr | None = None
    # Secret because custom auth headers (Azure's api-key, gateway tokens) live here.
    headers: dict[str, SecretStr] = {}
    max_connections: Annotated[int, Field(gt=0)] = 512


class AnthropicProvider(Strict):
    kind: Literal["anthropic"]
    base_url: str = "https://api.anthropic.com"
    api_key: SecretStr | None = None
    anthropic_version: str = "2023-06-01"
    default_max_tokens: Annotated[int, Field(gt=0)] = 4096
    max_connections: Annotated[int, Field(gt=0)] = 512


ProviderConfig = Annotated[
    SimulatorProvider | OpenAICompatProvider | AnthropicProvider,
    Field(discriminator="kind"),
]


# --- models and routing -----------------------------------------------------


class Deployment(Strict):
    provider: str
    model: str
    weight: Annotated[float, Field(gt=0)] = 1.0
    context_window: Annotated[int, Field(gt=0)] | None = None

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"


class ModelAlias(Strict):
    alias: Annotated[str, Field(min_length=1)]
    kind: Literal["chat", "embeddings"] = "chat"
    deployments: Annotated[list[Deployment], Field(min_length=1)]
    timeout_s: Seconds = 60.0
    deadline_s: Seconds | None = None
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    fallbacks: list[str] = []
    context_fallback: str | None = None


class BreakerConfig(Strict):
    window_s: Seconds = 30.0
    min_requests: Annotated[int, Field(ge=1)] = 5
    failure_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    cooldown_s: Seconds = 10.0


class RoutingConfig(Strict):
    backoff_base_s: Annotated[float, Field(ge=0)] = 0.1
    backoff_max_s: Annotated[float, Field(ge=0)] = 2.0
    max_retry_after_s: Annotated[float, Field(ge=0)] = 10.0
    stream_idle_timeout_s: Seconds = 30.0
    deadline_s: Seconds = 300.0
    breaker: BreakerConfig = BreakerConfig()


# --- telemetry and cost -----------------------------------------------------


class LogConfig(Strict):
    """One JSON line per request."""

    destination: Literal["stdout", "file", "off"] = "stdout"
    path: str = ".keel/requests.log"

    @field_validator("destination", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` as false; it means "off" here.
        return "off" if value is False else value


class SamplingConfig(Strict):
    """Tail-based: decided when the request is over, on what happened."""

    rate: Share = 1.0  # share of ordinary requests kept
    slow_ms: Annotated[float, Field(gt=0)] = 5000.0  # slower than this: always kept


class OTLPConfig(Strict):
    endpoint: str  # e.g. http://collector:4318/v1/traces
    headers: dict[str, SecretStr] = {}
    timeout_s: Seconds = 10.0
    service_name: str = "keel"


class TelemetryConfig(Strict):
    # Off: no log line, metrics, stored rows or spans (the cost header stays).
    enabled: bool = True
    capture_content: bool = True
    capture_content_exclude: list[str] = []  # tenants whose prompts and answers are never kept
    log: LogConfig = LogConfig()
    sampling: SamplingConfig = SamplingConfig()
    otlp: OTLPConfig | None = None
    queue_size: Annotated[int, Field(ge=1)] = 10_000
    # Where the log, store and OTLP sinks run: in a child process with its own
    # GIL (the event loop keeps its core), or on the writer thread.
    writer: Literal["process", "thread"] = "process"
    # Small batches, often: the writer thread shares the GIL with the event
    # loop, and a short turn per batch keeps requests' tail latency down
    # (bench/README.md: p99 at 300 req/s went from about 23 ms to 10 ms
    # against batches of 500 once a second).
    batch_size: Annotated[int, Field(ge=1)] = 100
    flush_interval_s: Seconds = 0.25


class Price(Strict):
    """USD per million tokens. Cached input and cache writes default to input."""

    input_per_mtok: Annotated[float, Field(ge=0)]
    output_per_mtok: Annotated[float, Field(ge=0)]
    cached_input_per_mtok: Annotated[float, Field(ge=0)] | None = None
    cache_write_per_mtok: Annotated[float, Field(ge=0)] | None = None


# --- tenants: tiers, limits, budgets ----------------------------------------

Limit = Annotated[int, Field(gt=0)]
USD = Annotated[float, Field(gt=0)]


class RateLimits(Strict):
    """Per minute, and in flight at once; absent means unlimited."""

    rpm: Limit | None = None
    tpm: Limit | None = None
    concurrent: Limit | None = None


class Downgrade(Strict):
    downgrade: Annotated[str, Field(min_length=1)]


class BudgetPolicy(Strict):
    daily_usd: USD | None = None
    monthly_usd: USD | None = None
    # At the budget: refuse, or serve the request from a cheaper alias.
    on_exceed: Literal["reject"] | Downgrade = "reject"


class Tier(Strict):
    """What one class of tenant may do. Tenants and keys may override any field."""

    tenant: RateLimits = RateLimits()
    key: RateLimits = RateLimits()
    user: RateLimits = RateLimits()  # per end user (the OpenAI ``user`` field)
    budget: BudgetPolicy = BudgetPolicy()
    max_tokens: Limit | None = None  # cap on a request's max_tokens, and its default
    models: list[str] | None = None  # aliases this tier may call; absent: all


class WebhookConfig(Strict):
    url: str
    headers: dict[str, SecretStr] = {}
    timeout_s: Seconds = 5.0


class AlertsConfig(Strict):
    budget_thresholds: list[Annotated[float, Field(gt=0, le=1)]] = [0.5, 0.8, 1.0]
    webhook: WebhookConfig | None = None
    # A day's spend over this multiple of the rolling 7-day / 28-day daily mean.
    anomaly_7d_ratio: Annotated[float, Field(gt=1)] = 2.0
    anomaly_28d_ratio: Annotated[float, Field(gt=1)] = 3.0


class LimitsConfig(Strict):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "keel:"  # lets several deployments share one Redis
    # Longest wait for Redis (a connection, a script) before a request is refused.
    redis_timeout_s: Seconds = 1.0
    default_tier: str | None = None  # for tenants and keys that name none
    budget_status: Literal[402, 429] = 402  # 429 for clients that only retry on it
    # How often a replica re-reads tenants (suspensions, overrides) from the store.
    refresh_s: Seconds = 0.5
    alerts: AlertsConfig = AlertsConfig()


class KeelConfig(Strict):
    server: ServerConfig = ServerConfig()
    database_url: str = "sqlite:///.keel/keel.db"
    providers: dict[str, ProviderConfig]
    models: Annotated[list[ModelAlias], Field(min_length=1)]
    routing: RoutingConfig = RoutingConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    # Keyed by deployment ("provider/model") or by model name; wins over the
    # bundled price table.
    prices: dict[str, Price] = {}
    tiers: dict[str, Tier] = {}
    limits: LimitsConfig = LimitsConfig()


def merge_override(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``, nested mappings merged, ``None`` kept (= unlimited)."""
    merged = dict(base)
    for name, value in override.items():
        below = merged.get(name)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[name] = merge_override(below, value)
        else:
            merged[name] = value
    return merged


def tier_with(tier: Tier, *overrides: Mapping[str, Any]) -> Tier:
    """The tier a tenant or key gets: its tier with its store overrides applied."""
    data = tier.model_dump()
    for override in overrides:
        data = merge_override(data, override)
    return Tier.model_validate(data)


def check_override(override: Any, *, where: str = "limits") -> list[str]:
    """Problems with a tier override from the store, CLI or admin API, each naming its field."""
    if not isinstance(override, Mapping):
        return [f"{where}: expected a mapping of tier fields"]
    try:
        Tier.model_validate(override)
    except ValidationError as exc:
        return [f"{where}.{line}" for line in format_validation(exc).splitlines()]
    return []


# --- loading ----------------------------------------------------------------

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


# `keel serve --workers N` hands the validated file's path to its workers here.
CONFIG_PATH_ENV = "KEEL_CONFIG"


def load_config(path: str | Path) -> KeelConfig:
    """Read, interpolate and validate ``path``; raise ``ConfigError`` naming the field."""
    return parse_config(read_yaml(path), source=str(path), environ=os.environ)


def load_config_from_env() -> KeelConfig:
    """The config a ``keel serve`` parent process named in ``KEEL_CONFIG``."""
    path = os.environ.get(CONFIG_PATH_ENV)
    if not path:
        raise ConfigError(f"{CONFIG_PATH_ENV} is not set; start workers with `keel serve`")
    return load_config(path)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: empty mapping)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", source=source) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping at the top level", source=source)
    return raw


def parse_config(raw: Any, *, source: str = "<config>", environ: Any = None) -> KeelConfig:
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping at the top level", source=source)
    data = interpolate_env(raw, (), os.environ if environ is None else environ, source)
    try:
        config = KeelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc), source=source) from None
    problems = _cross_check(config)
    if problems:
        raise ConfigError("\n".join(problems), source=source)
    return config


def interpolate_env(value: Any, path: tuple[str | int, ...], environ: Any, source: str) -> Any:
    if isinstance(value, dict):
        return {k: interpolate_env(v, (*path, k), environ, source) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, (*path, i), environ, source) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return str(environ[name])
        if default is not None:
            return default
        raise ConfigError(
            f"{format_path(path)}: environment variable {name} is not set", source=source
        )

    return _ENV_PATTERN.sub(substitute, value)


def format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_TAGS = {"simulator", "openai_compat", "anthropic"}


def format_validation(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        # Discriminated unions put the chosen tag in the path; users never wrote it.
        if len(loc) >= 3 and loc[0] == "providers" and loc[2] in _TAGS:
            loc = loc[:2] + loc[3:]
        kind = error["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "union_tag_invalid":
            message = f"unknown provider kind; expected one of {', '.join(sorted(_TAGS))}"
        elif kind == "union_tag_not_found":
            message = f"missing 'kind'; expected one of {', '.join(sorted(_TAGS))}"
        else:
            message = str(error["msg"])
            message = message.removeprefix("Value error, ")
        lines.append(f"{format_path(loc)}: {message}")
    return "\n".join(lines)


def _cross_check(config: KeelConfig) -> list[str]:
    """What one field cannot know alone: names that must refer to each other."""
    problems: list[str] = []
    aliases = {m.alias: m for m in config.models}
    seen: set[str] = set()
    for i, model in enumerate(config.models):
        where = f"models[{i}]"
        if model.alias in seen:
            problems.append(f'{where}.alias: duplicate alias "{model.alias}"')
        seen.add(model.alias)
        problems += _check_deployments(where, model, config.providers)
        for j, fallback in enumerate(model.fallbacks):
            problems += _check_target(f"{where}.fallbacks[{j}]", model, fallback, aliases)
        if model.context_fallback is not None:
            problems += _check_target(
                f"{where}.context_fallback", model, model.context_fallback, aliases
            )
    return problems + _check_tiers(config, aliases)


def _check_tiers(config: KeelConfig, aliases: dict[str, ModelAlias]) -> list[str]:
    problems = []
    default = config.limits.default_tier
    if default is not None and default not in config.tiers:
        problems.append(f'limits.default_tier: unknown tier "{default}"')
    for name, tier in config.tiers.items():
        problems += check_tier(f"tiers.{name}", tier, aliases)
    return problems


def check_tier(where: str, tier: Tier, aliases: Mapping[str, object]) -> list[str]:
    """Alias names a tier refers to must exist; used for config and store overrides."""
    problems = []
    for i, alias in enumerate(tier.models or ()):
        if alias not in aliases:
            problems.append(f'{where}.models[{i}]: unknown alias "{alias}"')
    on_exceed = tier.budget.on_exceed
    if isinstance(on_exceed, Downgrade):
        target = on_exceed.downgrade
        if target not in aliases:
            problems.append(f'{where}.budget.on_exceed.downgrade: unknown alias "{target}"')
        elif tier.models is not None and target not in tier.models:
            problems.append(
                f'{where}.budget.on_exceed.downgrade: alias "{target}" is not in this'
                " tier's models"
            )
    return problems


def _check_deployments(where: str, model: ModelAlias, providers: dict[str, Any]) -> list[str]:
    problems = []
    names: set[str] = set()
    for j, deployment in enumerate(model.deployments):
        if deployment.provider not in providers:
            known = ", ".join(sorted(providers)) or "none defined"
            problems.append(
                f'{where}.deployments[{j}].provider: unknown provider "{deployment.provider}"'
                f" (known: {known})"
            )
        if deployment.name in names:
            problems.append(
                f'{where}.deployments[{j}]: "{deployment.name}" is listed twice in this alias'
            )
        names.add(deployment.name)
    return problems


def _check_target(
    where: str, model: ModelAlias, name: str, aliases: dict[str, ModelAlias]
) -> list[str]:
    """A fallback must name another alias serving the same kind of request."""
    target = aliases.get(name)
    if target is None:
        return [f'{where}: unknown alias "{name}"']
    if target.alias == model.alias:
        return [f"{where}: an alias cannot fall back to itself"]
    if target.kind != model.kind:
        return [f'{where}: alias "{name}" serves {target.kind}, not {model.kind}']
    return []

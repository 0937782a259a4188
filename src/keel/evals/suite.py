"""Suite files: what to run (dataset, target, scorers), how (repeats, concurrency) and the gate.

A suite is one YAML file, validated strictly: an unknown or misspelt key is
an error naming its path, as in keel.yaml. The dataset path is relative to
the suite file. See docs/evals.md for every field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from keel.config import format_validation, read_yaml
from keel.errors import ConfigError

__all__ = [
    "Baseline",
    "GateConfig",
    "JudgeDefaults",
    "Reducer",
    "Suite",
    "Target",
    "load_suite",
    "parse_suite",
    "parse_target",
]

Reducer = Literal["mean", "pass@k", "all-k"]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# prompt@1.2.0, prompt@label:production
_PROMPT_REF = re.compile(r"(?P<name>[^@\s]+)@(?:label:(?P<label>\S+)|(?P<version>\S+))")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Target:
    """What the suite scores: a prompt version, the version a label serves, or a model alias."""

    kind: Literal["prompt", "alias"]
    name: str
    version: str | None = None
    label: str | None = None

    def describe(self) -> str:
        if self.kind == "alias":
            return f"alias {self.name}"
        return f"{self.name}@{self.version}" if self.version else f"{self.name}@label:{self.label}"

    def pinned(self, version: str) -> Target:
        """This prompt target at an exact version (what a label resolved to)."""
        return Target("prompt", self.name, version=version)


@dataclass(frozen=True, slots=True)
class Baseline:
    """What the candidate is compared with: a label's version, a stored run, or nothing."""

    kind: Literal["label", "run", "none"]
    label: str | None = None
    run_id: int | None = None

    def describe(self) -> str:
        if self.kind == "label":
            return f"label:{self.label}"
        return f"run:{self.run_id}" if self.kind == "run" else "none"


class _PromptSpec(_Strict):
    name: Annotated[str, Field(min_length=1)]
    version: Annotated[str, Field(min_length=1)] | None = None
    label: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> _PromptSpec:
        if (self.version is None) == (self.label is None):
            raise ValueError("give exactly one of version or label")
        return self


class _TargetSpec(_Strict):
    prompt: str | _PromptSpec | None = None
    alias: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("prompt", mode="after")
    @classmethod
    def _prompt_ref(cls, value: str | _PromptSpec | None) -> str | _PromptSpec | None:
        if isinstance(value, str):
            parse_target(f"prompt:{value}")  # raises ValueError with the expected shape
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> _TargetSpec:
        if (self.prompt is None) == (self.alias is None):
            raise ValueError(
                "give exactly one of prompt (NAME@VERSION or NAME@label:LABEL) or alias"
            )
        return self

    def target(self) -> Target:
        if self.alias is not None:
            return Target("alias", self.alias)
        if isinstance(self.prompt, _PromptSpec):
            return Target("prompt", self.prompt.name, self.prompt.version, self.prompt.label)
        return parse_target(f"prompt:{self.prompt}")


class GateConfig(_Strict):
    """When the gate fails. Points are percentage points of pass rate (2.0 = 2%)."""

    floors: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
    max_regression_points: Annotated[float, Field(ge=0, le=100)] = 2.0
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    token_inflation_warn: Annotated[float, Field(ge=0)] = 0.10


class JudgeDefaults(_Strict):
    """Defaults for LLM-judge scorers: the alias when a judge spec names none; the cache."""

    alias: Annotated[str, Field(min_length=1)] | None = None
    cache: bool = True  # false: ask the judge again on every run (verdicts not kept)


class _SuiteFile(_Strict):
    name: str
    dataset: Annotated[str, Field(min_length=1)]
    target: _TargetSpec
    scorers: Annotated[list[dict[str, Any]], Field(min_length=1)]
    gate: GateConfig = GateConfig()
    repeats: Annotated[int, Field(ge=1, le=100)] = 1
    reducer: Reducer = "mean"
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 32
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    baseline: str | None = None
    judge: JudgeDefaults = JudgeDefaults()
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                "expected letters, digits, '.', '_' or '-', starting with a letter or digit,"
                " at most 128 characters"
            )
        return value

    @field_validator("scorers")
    @classmethod
    def _typed(cls, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for spec in specs:
            kind = spec.get("type")
            if not isinstance(kind, str) or not kind:
                raise ValueError("every scorer needs a type, e.g. {type: exact_match}")
        return specs

    @field_validator("baseline")
    @classmethod
    def _baseline(cls, value: str | None) -> str | None:
        if value is not None:
            parse_baseline(value)
        return value


@dataclass(frozen=True, slots=True)
class Suite:
    """A validated suite. ``dataset_path`` is resolved against the suite file's folder."""

    name: str
    path: Path | None
    dataset_path: Path
    target: Target
    scorers: tuple[Mapping[str, Any], ...]
    gate: GateConfig
    repeats: int
    reducer: Reducer
    concurrency: int
    retries: int
    baseline: Baseline
    judge: JudgeDefaults
    description: str | None = None

    def with_target(self, target: Target) -> Suite:
        from dataclasses import replace

        baseline = self.baseline
        if target.kind == "alias" and baseline.kind == "label":
            baseline = Baseline("none")
        return replace(self, target=target, baseline=baseline)


def parse_target(text: str) -> Target:
    """``prompt:NAME@VERSION``, ``prompt:NAME@label:LABEL`` or ``alias:NAME``."""
    kind, _, rest = text.partition(":")
    if kind == "alias" and rest:
        return Target("alias", rest)
    match = _PROMPT_REF.fullmatch(rest) if kind == "prompt" else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a target; expected prompt:NAME@VERSION, prompt:NAME@label:LABEL"
            " or alias:NAME"
        )
    return Target("prompt", match["name"], match["version"], match["label"])


def parse_baseline(text: str) -> Baseline:
    """``label:NAME``, ``run:ID`` or ``none``."""
    kind, _, rest = text.partition(":")
    if text == "none":
        return Baseline("none")
    if kind == "label" and rest:
        return Baseline("label", label=rest)
    if kind == "run" and rest.isdigit() and int(rest) > 0:
        return Baseline("run", run_id=int(rest))
    raise ValueError(f"{text!r} is not a baseline; expected label:NAME, run:ID or none")


def parse_suite(raw: Any, *, source: str = "<suite>", base: Path | None = None) -> Suite:
    """Validate a suite mapping; raise ``ConfigError`` naming each bad field."""
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping at the top level", source=source)
    try:
        spec = _SuiteFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc), source=source) from None
    target = spec.target.target()
    if spec.baseline is not None:
        baseline = parse_baseline(spec.baseline)
    else:
        baseline = (
            Baseline("label", label="production") if target.kind == "prompt" else Baseline("none")
        )
    if target.kind == "alias" and baseline.kind == "label":
        raise ConfigError(
            "baseline: a label baseline needs a prompt target; use run:ID or none", source=source
        )
    folder = base if base is not None else Path.cwd()
    return Suite(
        name=spec.name,
        path=None,
        dataset_path=(folder / spec.dataset).resolve(),
        target=target,
        scorers=tuple(spec.scorers),
        gate=spec.gate,
        repeats=spec.repeats,
        reducer=spec.reducer,
        concurrency=spec.concurrency,
        retries=spec.retries,
        baseline=baseline,
        judge=spec.judge,
        description=spec.description,
    )


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file (``ConfigError`` naming the file and field)."""
    from dataclasses import replace

    file = Path(path)
    suite = parse_suite(read_yaml(file), source=str(file), base=file.resolve().parent)
    return replace(suite, path=file)

"""What every scorer shares: the options base model, the two errors, small helpers.

``ScorerConfigError`` is a bad scorer spec in a suite (unknown type, a bad
option): it names the field and stops the run before any call. ``ScoringError``
is an example a scorer cannot judge (no expected value to compare with, a
custom scorer returning garbage): the runner records it as an error, which
counts as a failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.errors import ConfigError, InvalidRequest
from keel.evals.base import Example, Score

# Part of a value shown in a detail string; reports show many of them side by side.
_SHOWN = 120


class ScorerConfigError(ConfigError):
    """A scorer spec is wrong. Each problem is (field path, message), e.g.
    ``("scorers[2].mode", "Input should be 'all' or 'any'")``."""

    def __init__(self, problems: Sequence[tuple[str, str]], *, source: str | None = None):
        self.problems = list(problems)
        super().__init__(
            "\n".join(f"{path}: {message}" if path else message for path, message in problems),
            source=source,
        )

    def under(self, where: str) -> ScorerConfigError:
        """The same problems with their paths inside ``where`` (``scorers[2]``)."""
        return ScorerConfigError([(_join(where, path), msg) for path, msg in self.problems])


def _join(where: str, path: str) -> str:
    if not where:
        return path
    if not path:
        return where
    return f"{where}{path}" if path.startswith("[") else f"{where}.{path}"


class ScoringError(InvalidRequest):
    """A scorer cannot score this example; recorded as an error and counted as a failure."""


class ScorerOptions(BaseModel):
    """Base of every scorer's options: unknown keys are errors; ``name`` renames the scorer.

    A scorer's ``threshold`` is declared by each subclass with its own default,
    so scorers whose value is already pass/fail (latency, cost) need none.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1)


# ``threshold: Threshold = 0.8`` in an options model: passed = value >= threshold.
Threshold = Annotated[float, Field(ge=0.0, le=1.0)]
OptionsT = TypeVar("OptionsT", bound=BaseModel)


def parse_options(model: type[OptionsT], options: Mapping[str, Any]) -> OptionsT:
    """``model`` validated from ``options``, or ``ScorerConfigError`` naming each bad field."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise ScorerConfigError(validation_problems(exc)) from None


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (field path, message) pairs, in the words a suite author needs."""
    problems = []
    for error in exc.errors(include_url=False):
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        if error["type"] == "extra_forbidden":
            message = "unknown option"
        elif error["type"] == "missing":
            message = "required option is missing"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        problems.append((path, message))
    return problems


def passed(value: float, threshold: float) -> Score:
    """A score whose ``passed`` is ``value >= threshold``."""
    return Score(value=value, passed=value >= threshold)


def shown(value: Any) -> str:
    """``value`` for a detail string: repr'd and cut to a readable length."""
    return cut(repr(value))


def cut(text: str) -> str:
    """``text`` cut to a length a report can show beside many others."""
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def expected_texts(example: Example, *, prefer: str = "expected") -> list[str]:
    """The strings an output is compared with: ``expected`` (a string or a list of
    strings) or ``reference``, in the order ``prefer`` says; ``ScoringError`` if none."""
    order = ("expected", "reference") if prefer == "expected" else ("reference", "expected")
    for field in order:
        value = example.expected if field == "expected" else example.reference
        if value is None:
            continue
        if isinstance(value, str):
            return [value]
        if _strings(value):
            return list(value)
        if field == "expected":
            raise ScoringError(
                f"example {example.id!r}: expected must be a string or a list of strings"
                f" for this scorer, not {type(value).__name__}",
                param="expected",
            )
    raise ScoringError(
        f"example {example.id!r} has neither expected nor reference to compare with",
        param="expected",
    )


def _strings(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(item, str) for item in value)
    )

"""The evals vocabulary every part shares: examples, calls, cases, scores, scorers.

A run takes each ``Example`` of a dataset, calls the target once per repeat
through a ``GatewayClient`` (in-process or over HTTP, the same pipeline
production uses), and hands each answer to every scorer as a ``ScoringCase``.
A scorer returns a ``Score``; one that raises is recorded as an error and
counts as a failure, never as a missing value.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Example:
    """One golden example. ``variables`` feed a prompt target; ``messages`` an alias target."""

    id: str
    variables: Mapping[str, Any] = field(default_factory=dict)
    messages: Sequence[Mapping[str, Any]] | None = None
    expected: Any = None  # exact answer, a number, a label, or a JSON value
    reference: str | None = None  # a reference answer for similarity scorers and judges
    context: Sequence[str] = ()  # documents the answer must be grounded in
    tags: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class CallResult:
    """What one call of the target returned, as the gateway reported it."""

    text: str  # the first choice's message content ("" when none)
    response: Mapping[str, Any]  # the whole chat.completion body
    latency_ms: float
    cost_usd: float | None  # x-keel-cost-usd; None when the price is unknown
    input_tokens: int
    output_tokens: int
    request_id: str | None = None
    prompt_version: str | None = None  # x-keel-prompt-version


class GatewayClient(Protocol):
    """How evals reach models: the same pipeline production traffic goes through."""

    async def chat(self, body: Mapping[str, Any]) -> CallResult: ...

    async def embed(self, alias: str, texts: Sequence[str]) -> list[list[float]]: ...


@dataclass(frozen=True, slots=True)
class ScoringCase:
    example: Example
    output: CallResult
    gateway: GatewayClient  # for scorers that call models (embeddings, judges)


@dataclass(frozen=True, slots=True)
class Score:
    """``value`` in [0, 1] (1 best); ``passed`` against the scorer's threshold."""

    value: float
    passed: bool
    detail: str | None = None  # why, for reports (a judge's reasoning, the diff, ...)


class Scorer(Protocol):
    name: str

    async def score(self, case: ScoringCase) -> Score: ...


# A scorer factory takes the suite's options for it (threshold included).
ScorerFactory = Callable[[Mapping[str, Any]], Scorer]
CustomScore = Callable[[ScoringCase], Score | Awaitable[Score]]

"""The LLM-judge scorers: ``judge`` (a rubric, G-Eval style) and ``groundedness``.

Suite options::

    - type: judge
      alias: judge            # the model alias the judge calls go to
      rubric: "The answer is correct, complete and concise."   # or:
      criteria: ["states the refund window", "cites the policy"]
      steps: [...]            # optional evaluation steps; default: Keel's
      scale: "1-5"            # or "0-1"; the score is normalised to [0, 1]
      threshold: 0.75         # optional: passed = score >= threshold; else the judge's "pass"
      include_reference: true # show the example's reference, when it has one
      include_context: false  # show the example's context documents
      temperature: 0          # the judge's sampling temperature (part of the cache key)
    - type: groundedness
      alias: judge
      threshold: 1.0          # share of the answer's claims the context must support

Both keep verdicts in a ``JudgeCache`` when the runner gives them one with
:func:`with_judge_cache`; a judge that cannot give a verdict raises, and the
runner counts that example as a failure.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from keel.evals.base import GatewayClient, Score, Scorer, ScoringCase
from keel.evals.judge import Judge, JudgeUsage, Rubric, Verdict
from keel.evals.scorers import register
from keel.evals.scorers._base import ScorerOptions, ScoringError, Threshold, parse_options
from keel.store.judge_cache import JudgeCache

__all__ = [
    "JUDGE_TYPES",
    "GroundednessScorer",
    "JudgeScorer",
    "groundedness_scorer",
    "judge_scorer",
    "judge_usage",
    "with_judge_cache",
    "with_judge_defaults",
]

JUDGE_TYPES = frozenset({"judge", "groundedness"})


Temperature = Annotated[float, Field(ge=0.0, le=2.0)]


class JudgeOptions(ScorerOptions):
    alias: str = Field(min_length=1)
    temperature: Temperature = 0.0
    rubric: str | None = Field(default=None, min_length=1)
    criteria: list[str] | None = Field(default=None, min_length=1)
    steps: list[str] = Field(default_factory=list)
    scale: Literal["1-5", "0-1"] = "1-5"
    threshold: Threshold | None = None
    include_reference: bool = True
    include_context: bool = False

    @model_validator(mode="after")
    def _one_rubric(self) -> JudgeOptions:
        if (self.rubric is None) == (self.criteria is None):
            raise ValueError("give either rubric (text) or criteria (a list), not both or neither")
        return self

    def to_rubric(self) -> Rubric:
        criteria = self.rubric or "\n".join(f"- {c.strip()}" for c in self.criteria or ())
        return Rubric(criteria=criteria, steps=tuple(self.steps), scale=self.scale)


class GroundednessOptions(ScorerOptions):
    alias: str = Field(min_length=1)
    temperature: Temperature = 0.0
    threshold: Threshold = 1.0


class _JudgeBacked:
    """Holds one ``Judge`` for the run's gateway (scoring cases all carry the same one)."""

    name: str

    def __init__(self, alias: str, cache: JudgeCache | None, temperature: float) -> None:
        self.alias = alias
        self.cache = cache
        self.temperature = temperature
        self._judge: Judge | None = None

    def judge_for(self, gateway: GatewayClient) -> Judge:
        if self._judge is None or self._judge.gateway is not gateway:
            self._judge = Judge(gateway, self.alias, self.cache, temperature=self.temperature)
        return self._judge

    def with_cache(self, cache: JudgeCache | None) -> Self:
        """A copy keeping its verdicts in ``cache`` (and with a judge of its own)."""
        clone = copy.copy(self)
        clone.cache = cache
        clone._judge = None
        return clone

    @property
    def usage(self) -> JudgeUsage:
        """What this scorer's judge calls cost so far (zero before the first case)."""
        return self._judge.usage if self._judge is not None else JudgeUsage()


class JudgeScorer(_JudgeBacked):
    """Rubric scoring by an LLM judge; ``value`` is the normalised score."""

    def __init__(
        self,
        alias: str,
        rubric: Rubric,
        *,
        name: str = "judge",
        threshold: float | None = None,
        include_reference: bool = True,
        include_context: bool = False,
        temperature: float = 0.0,
        cache: JudgeCache | None = None,
    ) -> None:
        super().__init__(alias, cache, temperature)
        self.name = name
        self.rubric = rubric
        self.threshold = threshold
        self.include_reference = include_reference
        self.include_context = include_context

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], cache: JudgeCache | None = None
    ) -> JudgeScorer:
        opts = parse_options(JudgeOptions, options)
        return cls(
            opts.alias,
            opts.to_rubric(),
            name=opts.name or "judge",
            threshold=opts.threshold,
            include_reference=opts.include_reference,
            include_context=opts.include_context,
            temperature=opts.temperature,
            cache=cache,
        )

    async def score(self, case: ScoringCase) -> Score:
        example = case.example
        verdict = await self.judge_for(case.gateway).rate(
            case.output.text,
            self.rubric,
            reference=example.reference if self.include_reference else None,
            context=list(example.context) if self.include_context and example.context else None,
        )
        passed = verdict.passed if self.threshold is None else verdict.score >= self.threshold
        return Score(verdict.score, passed, _rubric_detail(verdict, self.rubric))


class GroundednessScorer(_JudgeBacked):
    """Share of the answer's claims that the example's context supports."""

    def __init__(
        self,
        alias: str,
        *,
        name: str = "groundedness",
        threshold: float = 1.0,
        temperature: float = 0.0,
        cache: JudgeCache | None = None,
    ) -> None:
        super().__init__(alias, cache, temperature)
        self.name = name
        self.threshold = threshold

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], cache: JudgeCache | None = None
    ) -> GroundednessScorer:
        opts = parse_options(GroundednessOptions, options)
        return cls(
            opts.alias,
            name=opts.name or "groundedness",
            threshold=opts.threshold,
            temperature=opts.temperature,
            cache=cache,
        )

    async def score(self, case: ScoringCase) -> Score:
        example = case.example
        if not example.context:
            raise ScoringError(
                f"example {example.id!r} has no context to check groundedness against",
                param="context",
            )
        verdict = await self.judge_for(case.gateway).groundedness(
            case.output.text, list(example.context)
        )
        return Score(verdict.score, verdict.score >= self.threshold, _grounded_detail(verdict))


@register("judge")
def judge_scorer(options: Mapping[str, Any]) -> JudgeScorer:
    return JudgeScorer.from_options(options)


@register("groundedness")
def groundedness_scorer(options: Mapping[str, Any]) -> GroundednessScorer:
    return GroundednessScorer.from_options(options)


def with_judge_defaults(
    spec: Mapping[str, Any], *, alias: str | None, temperature: float | None = None
) -> Mapping[str, Any]:
    """A judge ``spec`` with the suite's default ``alias`` and ``temperature`` where it
    sets none; any other scorer's spec unchanged."""
    if spec.get("type") not in JUDGE_TYPES:
        return spec
    defaults = {"alias": alias, "temperature": temperature}
    filled = {k: v for k, v in defaults.items() if v is not None and k not in spec}
    return {**spec, **filled} if filled else spec


def with_judge_cache(scorer: Scorer, cache: JudgeCache | None) -> Scorer:
    """``scorer`` keeping its verdicts in ``cache`` when it is a judge scorer; else itself.

    The runner calls it on each scorer it built: ``[with_judge_cache(s, cache) for s in
    scorers]``. Without it a judge scorer still asks each question once per run.
    """
    if isinstance(scorer, _JudgeBacked):
        return scorer.with_cache(cache)
    return scorer


def judge_usage(scorers: Iterable[Scorer]) -> JudgeUsage:
    """What the judge scorers among ``scorers`` spent on judge calls, summed."""
    total = JudgeUsage()
    for scorer in scorers:
        if isinstance(scorer, _JudgeBacked):
            usage = scorer.usage
            total.calls += usage.calls
            total.input_tokens += usage.input_tokens
            total.output_tokens += usage.output_tokens
            total.cost_usd += usage.cost_usd
            total.unknown_cost_calls += usage.unknown_cost_calls
    return total


def _rubric_detail(verdict: Verdict, rubric: Rubric) -> str:
    raw = verdict.raw_score
    given = f"{raw:g}/5" if rubric.scale == "1-5" and raw is not None else f"{verdict.score:.2f}"
    return f"{given}: {verdict.reason}" if verdict.reason else given


def _grounded_detail(verdict: Verdict) -> str:
    supported = len(verdict.claims) - len(verdict.unsupported)
    text = f"{supported}/{len(verdict.claims)} claims supported"
    if verdict.unsupported:
        text += "; unsupported: " + "; ".join(repr(c) for c in verdict.unsupported)
    return f"{text}. {verdict.reason}" if verdict.reason else text

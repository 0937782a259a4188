"""Experiment files: what is compared, on whom, watched by which guards, moved how.

One YAML file per experiment (``experiments/<name>.yaml``). A variant is a
prompt version, a model alias, or both; exactly one is the control. Units
(tenants, end users or single requests) are bucketed by a sticky hash, so a
unit sees the same variant on every replica and across restarts. An
experiment is either a fixed A/B ``split`` or a ``ramp`` that moves the
candidate through steps of traffic, each held for a while and analysed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Share = Annotated[float, Field(ge=0, le=100)]  # percent of eligible traffic
Unit = Literal["tenant", "user", "request"]
GuardMetric = Literal[
    "error_rate",
    "p95_latency_ms",
    "ttft_ms",
    "cost_per_request",
    "thumbs_down_rate",
    "guardrail_flag_rate",
    "judge_score",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    control: bool = False
    prompt_version: str | None = None  # of the experiment's prompt
    alias: str | None = None  # a Keel model alias

    @model_validator(mode="after")
    def _something(self) -> Variant:
        if self.prompt_version is None and self.alias is None:
            raise ValueError("a variant needs a prompt_version, an alias, or both")
        return self


class Cohort(_Strict):
    """Who is eligible. Empty lists mean no restriction."""

    tiers: list[str] = []  # only tenants on these tiers
    include_tenants: list[str] = []
    exclude_tenants: list[str] = []
    # Tenants on these tiers take part only when listed in include_tenants (opt-in).
    opt_in_tiers: list[str] = []


class Guard(_Strict):
    """Roll back when the candidate is worse than control on ``metric`` by more than allowed.

    ``max_increase`` is relative for latency and cost metrics (0.2 = 20 % worse) and
    absolute for rates and scores (0.02 = 2 points); ``max_decrease`` likewise for
    metrics where higher is better (judge_score).
    """

    metric: GuardMetric
    max_increase: Annotated[float, Field(ge=0)] | None = None
    max_decrease: Annotated[float, Field(ge=0)] | None = None
    judge_alias: str | None = None  # judge_score only: the judge model alias
    judge_sample: Annotated[float, Field(gt=0, le=1)] = 0.05  # share of requests judged
    # judge_score only: what the judge rates each sampled answer on (it sees the request too).
    judge_criteria: str = (
        "Does the answer serve the user's request: correct, relevant, complete and clear?"
    )

    @model_validator(mode="after")
    def _one_direction(self) -> Guard:
        # Only the worse direction is guarded: an allowance on the other side
        # would be silently ignored, so it is refused.
        if self.metric == "judge_score" and self.max_increase is not None:
            raise ValueError("judge_score is guarded against decreases: use max_decrease")
        if self.metric != "judge_score" and self.max_decrease is not None:
            raise ValueError(f"{self.metric} is guarded against increases: use max_increase")
        return self


class Ramp(_Strict):
    steps: Annotated[list[Share], Field(min_length=1)] = [1, 5, 20, 50, 100]
    hold_s: Annotated[float, Field(gt=0)] = 600.0  # at least this long per step
    min_samples: Annotated[int, Field(ge=1)] = 200  # per variant, per step, before advancing
    interval_s: Annotated[float, Field(gt=0)] = 30.0  # how often the controller analyses


class Shadow(_Strict):
    """Mirror a share of control traffic to the candidate; users only see control.

    Mirrored calls are costed and recorded as shadow traffic of the candidate, and
    never charged to the tenant's limits or budget.
    """

    share: Annotated[float, Field(gt=0, le=1)] = 0.1
    queue_size: Annotated[int, Field(ge=1)] = 1000
    concurrency: Annotated[int, Field(ge=1)] = 4
    judge_alias: str | None = None  # pairwise preference and similarity


class Experiment(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,127}$")]
    description: str = ""
    prompt: str | None = None  # the registry prompt whose requests take part
    alias: str | None = None  # or: requests for this alias take part
    unit: Unit = "user"
    seed: str | None = None  # defaults to the name; change it to reshuffle units
    variants: Annotated[list[Variant], Field(min_length=2)]
    cohort: Cohort = Cohort()
    guards: list[Guard] = []
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05  # sequential tests' false-rollback rate
    srm_p: Annotated[float, Field(gt=0, lt=1)] = 0.001  # sample-ratio mismatch threshold
    # Exactly one of: a fixed split (percent per variant name, summing to 100), a ramp
    # of the one non-control variant, or shadow mode.
    split: dict[str, Share] | None = None
    ramp: Ramp | None = None
    shadow: Shadow | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        controls = [v.name for v in self.variants if v.control]
        if len(controls) != 1:
            raise ValueError(f"exactly one variant must be the control, found {len(controls)}")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if (self.prompt is None) == (self.alias is None):
            raise ValueError("name exactly one of prompt or alias: the traffic that takes part")
        modes = [m for m in (self.split, self.ramp, self.shadow) if m is not None]
        if len(modes) != 1:
            raise ValueError("give exactly one of split, ramp or shadow")
        if self.split is not None:
            if set(self.split) != set(names):
                raise ValueError("split must give a share for every variant, and only those")
            if abs(sum(self.split.values()) - 100) > 1e-9:
                raise ValueError("split shares must sum to 100")
        if (self.ramp is not None or self.shadow is not None) and len(self.variants) != 2:
            raise ValueError("a ramp or shadow experiment has exactly two variants")
        return self

    @property
    def control(self) -> Variant:
        return next(v for v in self.variants if v.control)

    @property
    def candidates(self) -> list[Variant]:
        return [v for v in self.variants if not v.control]

    @property
    def hash_seed(self) -> str:
        return self.seed or self.name

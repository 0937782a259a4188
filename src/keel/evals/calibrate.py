"""Judge calibration: how often a judge scorer agrees with human labels.

A judge that disagrees with humans is noise, not a gate. ``calibrate`` compares
verdicts with labels: Cohen's kappa on pass/fail (agreement beyond chance),
Spearman's rho on scores (rank agreement, whatever the two scales), accuracy
and the confusion matrix; it warns when kappa is below 0.6.
``run_calibration`` runs a judge scorer (the same spec a suite uses) over a
JSONL file of human labels, through the judge cache, and calibrates it.

Labels, one JSON object a line::

    {"id": "r1", "output": "...", "reference": "...", "context": ["..."],
     "pass": true, "score": 4}

``reference``, ``context`` (a string or a list of strings) and ``score`` are
optional; ``score`` may be on any scale, since only its ranks count.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from keel.errors import ConfigError, StoreError
from keel.evals.base import CallResult, Example, GatewayClient, Scorer, ScoringCase
from keel.evals.judge import JudgeUsage
from keel.evals.scorers._base import ScorerConfigError
from keel.evals.scorers.judge import GroundednessScorer, JudgeScorer, judge_usage
from keel.store.judge_cache import JudgeCache

__all__ = [
    "KAPPA_FLOOR",
    "Calibration",
    "Confusion",
    "Label",
    "LabelPair",
    "calibrate",
    "calibrate_file",
    "cohen_kappa",
    "load_labels",
    "run_calibration",
    "spearman",
]

# Below this Cohen's kappa a judge is not fit to gate: "moderate" agreement at
# best on Landis and Koch's scale, where 0.61-0.80 is "substantial".
KAPPA_FLOOR = 0.6
NOISE_WARNING = "a judge that disagrees with humans is noise, not a gate"


@dataclass(frozen=True, slots=True)
class LabelPair:
    """One example's human label beside the judge's verdict on it.

    A judge that failed on the example (``error``) counts as a "fail" verdict,
    as it does in a run, so an erroring judge cannot look better than it is.
    """

    id: str
    human_pass: bool
    judge_pass: bool
    human_score: float | None = None
    judge_score: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Confusion:
    """Counts of (judge, human) verdicts."""

    both_pass: int = 0
    judge_pass_human_fail: int = 0
    judge_fail_human_pass: int = 0
    both_fail: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "both_pass": self.both_pass,
            "judge_pass_human_fail": self.judge_pass_human_fail,
            "judge_fail_human_pass": self.judge_fail_human_pass,
            "both_fail": self.both_fail,
        }


@dataclass(frozen=True, slots=True)
class Calibration:
    """Agreement of a judge with human labels over ``n`` examples.

    ``kappa`` is None when it is undefined (judge and humans each gave every
    example the same verdict); ``spearman`` is None with fewer than two
    examples scored by both, or when either side's scores are all equal.
    ``warning`` is set whenever kappa is not at least ``KAPPA_FLOOR``.
    """

    n: int
    accuracy: float
    kappa: float | None
    spearman: float | None
    scored: int  # examples with both a human and a judge score
    confusion: Confusion
    errors: int  # examples the judge failed on (counted as "fail" verdicts)
    disagreements: tuple[str, ...]  # ids where judge and human verdicts differ
    warning: str | None
    usage: JudgeUsage | None = field(default=None, compare=False)

    @property
    def trustworthy(self) -> bool:
        return self.kappa is not None and self.kappa >= KAPPA_FLOOR

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``keel eval calibrate --format json``."""
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "kappa": self.kappa,
            "spearman": self.spearman,
            "scored": self.scored,
            "confusion": self.confusion.as_dict(),
            "errors": self.errors,
            "disagreements": list(self.disagreements),
            "kappa_floor": KAPPA_FLOOR,
            "trustworthy": self.trustworthy,
            "warning": self.warning,
            "judge_usage": None if self.usage is None else self.usage.as_dict(),
        }


def cohen_kappa(confusion: Confusion) -> float | None:
    """Cohen's kappa, (p_o - p_e) / (1 - p_e); None when p_e = 1 (undefined)."""
    c = confusion
    n = c.both_pass + c.judge_pass_human_fail + c.judge_fail_human_pass + c.both_fail
    if n == 0:
        return None
    observed = (c.both_pass + c.both_fail) / n
    judge_yes = (c.both_pass + c.judge_pass_human_fail) / n
    human_yes = (c.both_pass + c.judge_fail_human_pass) / n
    chance = judge_yes * human_yes + (1 - judge_yes) * (1 - human_yes)
    if math.isclose(chance, 1.0):
        return None
    return (observed - chance) / (1 - chance)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the ranks, ties sharing their average rank.

    Hand-written rather than scipy's (a large dependency for twenty lines);
    matches ``scipy.stats.spearmanr`` including ties. None when undefined.
    """
    if len(xs) != len(ys):
        raise ValueError("spearman: both sides need the same number of values")
    if len(xs) < 2:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        average = (start + end) / 2 + 1  # ranks are 1-based
        for i in order[start : end + 1]:
            ranks[i] = average
        start = end + 1
    return ranks


def calibrate(pairs: Iterable[LabelPair], *, usage: JudgeUsage | None = None) -> Calibration:
    """Agreement statistics for ``pairs``; raises ``ValueError`` when there are none."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("calibration needs at least one labelled example")
    counts = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    for pair in pairs:
        counts[(pair.judge_pass, pair.human_pass)] += 1
    confusion = Confusion(
        both_pass=counts[(True, True)],
        judge_pass_human_fail=counts[(True, False)],
        judge_fail_human_pass=counts[(False, True)],
        both_fail=counts[(False, False)],
    )
    scored = [
        (p.judge_score, p.human_score)
        for p in pairs
        if p.judge_score is not None and p.human_score is not None
    ]
    kappa = cohen_kappa(confusion)
    rho = spearman([j for j, _ in scored], [h for _, h in scored])
    return Calibration(
        n=len(pairs),
        accuracy=(confusion.both_pass + confusion.both_fail) / len(pairs),
        kappa=kappa,
        spearman=rho,
        scored=len(scored),
        confusion=confusion,
        errors=sum(p.error is not None for p in pairs),
        disagreements=tuple(p.id for p in pairs if p.judge_pass != p.human_pass),
        warning=_warning(kappa),
        usage=usage,
    )


def _warning(kappa: float | None) -> str | None:
    if kappa is None:
        return (
            "kappa is undefined: the judge and the humans gave every example the same"
            f" verdict; label passing and failing examples. Until then, {NOISE_WARNING}."
        )
    if kappa < KAPPA_FLOOR:
        return (
            f"kappa {kappa:.2f} is below {KAPPA_FLOOR}: {NOISE_WARNING}."
            " Read the disagreements, sharpen the rubric, and calibrate again."
        )
    return None


# --- labels and running a judge over them ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Label:
    id: str
    output: str
    human_pass: bool
    human_score: float | None = None
    reference: str | None = None
    context: tuple[str, ...] = ()


def load_labels(path: Path) -> list[Label]:
    """The labels in a JSONL file; ``ConfigError`` naming the line and field otherwise."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the labels: {error.strerror}") from None
    labels: list[Label] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        label = _label(line, f"{path}:{number}")
        if label.id in seen:
            raise ConfigError(f"{path}:{number}: id: {label.id!r} appears twice")
        seen.add(label.id)
        labels.append(label)
    if not labels:
        raise ConfigError(f"{path}: no labels in the file")
    return labels


class _LabelLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: StrictStr | StrictInt
    output: StrictStr
    passed: StrictBool = Field(alias="pass")
    score: Annotated[float, Field(strict=True, allow_inf_nan=False)] | StrictInt | None = None
    reference: StrictStr | None = None
    context: StrictStr | list[StrictStr] = Field(default_factory=list)


def _label(line: str, where: str) -> Label:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise ConfigError(f"{where}: not JSON: {error}") from None
    try:
        parsed = _LabelLine.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field_name = str(first["loc"][0]) if first["loc"] else ""
        problem = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{where}: {field_name}: {problem}".replace(": :", ":")) from None
    if parsed.id == "":
        raise ConfigError(f"{where}: id: must not be empty")
    context = [parsed.context] if isinstance(parsed.context, str) else parsed.context
    return Label(
        id=str(parsed.id),
        output=parsed.output,
        human_pass=parsed.passed,
        human_score=None if parsed.score is None else float(parsed.score),
        reference=parsed.reference,
        context=tuple(context),
    )


async def calibrate_file(
    labels_path: Path,
    scorer: Scorer,
    gateway: GatewayClient,
    *,
    concurrency: int = 8,
) -> Calibration:
    """Run ``scorer`` (a judge scorer) on each labelled output and compare with the labels.

    A scorer error on one example counts as a "fail" verdict and is reported
    in ``errors``; a store or configuration error stops the calibration.
    """
    labels = load_labels(labels_path)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def judged(label: Label) -> LabelPair:
        case = ScoringCase(
            example=Example(id=label.id, reference=label.reference, context=label.context),
            output=CallResult(
                text=label.output,
                response={},
                latency_ms=0.0,
                cost_usd=None,
                input_tokens=0,
                output_tokens=0,
            ),
            gateway=gateway,
        )
        async with gate:
            try:
                score = await scorer.score(case)
            except (StoreError, ConfigError):
                raise
            except Exception as error:  # any other failure is the judge's: a "fail"
                return LabelPair(
                    label.id, label.human_pass, False, label.human_score, None, str(error)
                )
        return LabelPair(label.id, label.human_pass, score.passed, label.human_score, score.value)

    pairs = await asyncio.gather(*(judged(label) for label in labels))
    return calibrate(pairs, usage=judge_usage([scorer]))


async def run_calibration(
    labels_path: Path,
    gateway: GatewayClient,
    spec: Mapping[str, Any],
    *,
    cache: JudgeCache | None = None,
    concurrency: int = 8,
) -> Calibration:
    """Calibrate the judge scorer ``spec`` describes, as a suite would write it.

    ``spec`` is ``{"type": "judge", "alias": ..., "rubric": ..., ...}`` or
    ``{"type": "groundedness", "alias": ...}``; a bad spec raises
    ``ScorerConfigError`` naming the field.
    """
    kind = spec.get("type", "judge")
    options = {k: v for k, v in spec.items() if k != "type"}
    scorer: Scorer
    if kind == "judge":
        scorer = JudgeScorer.from_options(options, cache)
    elif kind == "groundedness":
        scorer = GroundednessScorer.from_options(options, cache)
    else:
        raise ScorerConfigError([("type", f"expected 'judge' or 'groundedness', got {kind!r}")])
    return await calibrate_file(labels_path, scorer, gateway, concurrency=concurrency)

"""The runner: call the target once per example and repeat, score every answer, compare, gate.

``evaluate`` is the whole of ``keel eval run`` short of printing: it pins
the target (a label resolves to one version before the first call, so a
label moving mid-run cannot mix versions), resolves the baseline (the
version the ``production`` label serves, run through the same suite, or a
stored run's results), runs both under one concurrency bound, compares them
and applies the gate. ``run_target`` runs one side.

Failures are results, not gaps: a call that still fails after the client's
retries, or a scorer that raises, is a failed trial (value 0, error kept),
and an example whose trials failed counts as a failure in every mean.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from keel.errors import ConfigError, InvalidRequest, KeelError, NotFound
from keel.evals._results import (
    ExampleResult,
    RunResult,
    ScorerOutcome,
    Trial,
    reduce_trials,
)
from keel.evals.base import CallResult, Example, GatewayClient, Score, Scorer, ScoringCase
from keel.evals.client import CallError, ServedPrompt
from keel.evals.compare import Comparison, compare
from keel.evals.gate import Verdict, apply_gate
from keel.evals.suite import JudgeDefaults, Suite, Target

if TYPE_CHECKING:
    import sqlalchemy as sa
    from rich.progress import Progress, TaskID

    from keel.store.evals import EvalRun, EvalRunStore

__all__ = [
    "EvalGateway",
    "Evaluation",
    "ExampleResult",
    "RunResult",
    "ScorerBuilder",
    "ScorerContext",
    "ScorerOutcome",
    "Trial",
    "build_scorers",
    "evaluate",
    "request_body",
    "run_target",
    "store_evaluation",
]


class EvalGateway(GatewayClient, Protocol):
    """A ``GatewayClient`` that can also say which prompt version a label serves."""

    async def prompt(
        self, name: str, *, label: str | None = None, version: str | None = None
    ) -> ServedPrompt | None: ...


@dataclass(frozen=True, slots=True)
class ScorerContext:
    """What building a scorer may need beyond its spec.

    The hook for LLM-judge scorers: the suite's judge defaults, and the
    persistent judge cache (``keel.store.judge_cache.JudgeCache``) when a
    database is at hand, so an unchanged re-run calls no judge.
    """

    judge: JudgeDefaults = field(default_factory=JudgeDefaults)
    judge_cache: Any = None
    engine: sa.Engine | None = None


ScorerBuilder = Callable[[Mapping[str, Any], ScorerContext, str], Scorer]


def default_scorer_builder(spec: Mapping[str, Any], context: ScorerContext, where: str) -> Scorer:
    """Build through the scorer registry, with the suite's judge alias and the judge cache."""
    from keel.evals.scorers import build
    from keel.evals.scorers.judge import with_judge_cache, with_judge_defaults

    spec = with_judge_defaults(spec, alias=context.judge.alias)
    return with_judge_cache(build(spec, where=where), context.judge_cache)


def build_scorers(
    suite: Suite, context: ScorerContext, builder: ScorerBuilder | None = None
) -> list[Scorer]:
    """The suite's scorers, with unique names; ``ConfigError`` naming a bad spec or floor."""
    make = builder or default_scorer_builder
    source = str(suite.path) if suite.path else None
    built: list[Scorer] = []
    for index, spec in enumerate(suite.scorers):
        where = f"scorers[{index}]"
        try:
            scorer = make(spec, context, where)
        except KeelError as error:
            raise ConfigError(error.message, source=source) from None
        except (ValueError, TypeError, KeyError) as error:
            raise ConfigError(f"{where}: {error}", source=source) from None
        if any(s.name == scorer.name for s in built):
            raise ConfigError(
                f"{where}: a second scorer named {scorer.name!r}; give one a `name`",
                source=source,
            )
        built.append(scorer)
    names = [s.name for s in built]
    for floor in suite.gate.floors:
        if floor not in names:
            raise ConfigError(
                f"gate.floors.{floor}: no scorer of that name; the scorers are {', '.join(names)}",
                source=source,
            )
    return built


def request_body(target: Target, example: Example, suite: str) -> dict[str, Any]:
    """The chat request one example sends to the target."""
    metadata = {"eval_suite": suite, "eval_example": example.id}
    if target.kind == "alias":
        if not example.messages:
            raise InvalidRequest(
                f"example {example.id!r} has no messages, which an alias target needs",
                param="messages",
            )
        return {"model": target.name, "messages": list(example.messages), "metadata": metadata}
    prompt: dict[str, Any] = {"name": target.name, "variables": dict(example.variables)}
    if target.version is not None:
        prompt["version"] = target.version
    else:
        prompt["label"] = target.label
    return {"prompt": prompt, "messages": list(example.messages or []), "metadata": metadata}


# --- one side ----------------------------------------------------------------------------


class _Ticker:
    """A progress bar on stderr, or nothing (not a terminal, or turned off)."""

    def __init__(self, enabled: bool | None) -> None:
        from rich.console import Console

        console = Console(stderr=True)
        self.enabled = console.is_terminal if enabled is None else enabled
        self._progress: Progress | None = None
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )

    def __enter__(self) -> _Ticker:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, description: str, total: int) -> Callable[[], None]:
        if self._progress is None:
            return lambda: None
        progress = self._progress
        task: TaskID = progress.add_task(description, total=total)
        return lambda: progress.advance(task)


async def _score(scorer: Scorer, case: ScoringCase) -> tuple[Score, str | None]:
    try:
        score = await scorer.score(case)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # a scorer that raises is a failed trial, never a gap
        message = _describe(error)
        return Score(0.0, False, f"scorer error: {message}"), message
    if not isinstance(score, Score) or not math.isfinite(score.value):
        message = f"scorer returned {score!r}, not a Score with a finite value"
        return Score(0.0, False, message), message
    return score, None


def _describe(error: BaseException) -> str:
    if isinstance(error, CallError | KeelError):
        return error.message
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def _trial(
    gateway: GatewayClient,
    target: Target,
    example: Example,
    repeat: int,
    scorers: Sequence[Scorer],
    suite: str,
) -> Trial:
    try:
        output: CallResult = await gateway.chat(request_body(target, example, suite))
    except asyncio.CancelledError:
        raise
    except Exception as error:
        message = _describe(error)
        failed = Score(0.0, False, f"call failed: {message}")
        return Trial(repeat, None, {s.name: failed for s in scorers}, {"call": message})
    case = ScoringCase(example=example, output=output, gateway=gateway)
    results = await asyncio.gather(*(_score(s, case) for s in scorers))
    scores = {s.name: score for s, (score, _) in zip(scorers, results, strict=True)}
    errors = {s.name: e for s, (_, e) in zip(scorers, results, strict=True) if e is not None}
    return Trial(repeat, output, scores, errors)


async def run_target(
    gateway: GatewayClient,
    target: Target,
    examples: Sequence[Example],
    scorers: Sequence[Scorer],
    *,
    suite: str,
    dataset_hash: str,
    repeats: int = 1,
    reducer: str = "mean",
    concurrency: int = 32,
    semaphore: asyncio.Semaphore | None = None,
    on_trial: Callable[[], None] | None = None,
    prompt_hash: str | None = None,
) -> RunResult:
    """Each example ``repeats`` times, ``concurrency`` at once; results in dataset order."""
    bound = semaphore or asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(example: Example, repeat: int) -> Trial:
        async with bound:
            trial = await _trial(gateway, target, example, repeat, scorers, suite)
        if on_trial is not None:
            on_trial()
        return trial

    trials = await asyncio.gather(*(one(ex, r) for ex in examples for r in range(repeats)))
    names = [s.name for s in scorers]
    results = tuple(
        reduce_trials(ex.id, ex.tags, names, trials[i * repeats : (i + 1) * repeats], reducer)
        for i, ex in enumerate(examples)
    )
    is_prompt = target.kind == "prompt"
    return RunResult(
        suite=suite,
        target=target.describe(),
        prompt_name=target.name if is_prompt else None,
        prompt_version=target.version if is_prompt else None,
        prompt_hash=prompt_hash,
        dataset_hash=dataset_hash,
        scorers=tuple(names),
        examples=results,
        repeats=repeats,
        reducer=reducer,
        duration_s=time.perf_counter() - started,
    )


# --- the whole evaluation -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A candidate run, its baseline (if any), their comparison and the gate's verdict."""

    suite: Suite
    candidate: RunResult
    baseline: RunResult | None
    baseline_source: str  # "label:production → 1.0.0", "run #12", "none"
    comparison: Comparison
    verdict: Verdict
    notes: tuple[str, ...] = ()
    run_id: int | None = None  # set once stored
    calls: int = 0  # HTTP requests the client sent, retries and judge calls included
    judge: Mapping[str, Any] | None = None  # the judge scorers' calls, tokens and cost

    @property
    def passed(self) -> bool:
        return self.verdict.passed


async def _pin(gateway: EvalGateway, target: Target) -> tuple[Target, ServedPrompt | None]:
    if target.kind == "alias":
        return target, None
    served = await gateway.prompt(target.name, label=target.label, version=target.version)
    if served is None:
        what = f"version {target.version}" if target.version else f'label "{target.label}"'
        raise NotFound(f"prompt {target.name} has no {what} in the registry", param="target")
    return target.pinned(served.version), served


def _stored_baseline(store: EvalRunStore | None, run_id: int) -> RunResult:
    if store is None:
        raise InvalidRequest(
            f"baseline run:{run_id} is a stored run; give a config with the database (-c)",
            param="baseline",
        )
    run = store.get(run_id)
    if run is None:
        raise NotFound(f"baseline run:{run_id}: no stored eval run {run_id}", param="baseline")
    return RunResult.from_summary(
        run.summary,
        run_id=run.id,
        prompt_name=run.prompt_name,
        prompt_version=run.prompt_version,
        prompt_hash=run.prompt_hash,
    )


async def evaluate(
    suite: Suite,
    examples: Sequence[Example],
    dataset_hash: str,
    gateway: EvalGateway,
    scorers: Sequence[Scorer],
    *,
    store: EvalRunStore | None = None,
    progress: bool | None = None,
) -> Evaluation:
    """Run the suite's candidate and baseline, compare them and apply the gate.

    Raises ``KeelError`` / ``CallError`` for what makes the run meaningless
    (an unknown prompt version, an unreachable gateway, a missing stored
    run): the CLI exits 2 on those, 1 on a failed gate.
    """
    notes: list[str] = []
    candidate_target, served = await _pin(gateway, suite.target)
    baseline_target: Target | None = None
    baseline: RunResult | None = None
    source = "none"
    if suite.baseline.kind == "label" and suite.target.kind == "prompt":
        label = suite.baseline.label or "production"
        current = await gateway.prompt(suite.target.name, label=label)
        if current is None:
            notes.append(f'prompt {suite.target.name} has no "{label}" label yet')
        elif served is not None and current.content_hash == served.content_hash:
            source = f"label:{label} → {current.version} (the candidate itself)"
            notes.append(f'the candidate is what "{label}" serves: nothing to compare with')
        else:
            source = f"label:{label} → {current.version}"
            baseline_target = suite.target.pinned(current.version)
    elif suite.baseline.kind == "run" and suite.baseline.run_id is not None:
        baseline = _stored_baseline(store, suite.baseline.run_id)
        source = f"run #{suite.baseline.run_id} ({baseline.target})"
        if baseline.dataset_hash != dataset_hash:
            notes.append(
                f"baseline run #{suite.baseline.run_id} scored another dataset version;"
                " only examples with the same id are compared"
            )

    semaphore = asyncio.Semaphore(suite.concurrency)
    common = {
        "suite": suite.name,
        "dataset_hash": dataset_hash,
        "repeats": suite.repeats,
        "reducer": suite.reducer,
        "semaphore": semaphore,
    }
    total = len(examples) * suite.repeats
    with _Ticker(progress) as ticker:
        runs = [
            run_target(
                gateway,
                candidate_target,
                examples,
                scorers,
                on_trial=ticker.task(f"candidate {candidate_target.describe()}", total),
                prompt_hash=None if served is None else served.content_hash,
                **common,  # type: ignore[arg-type]
            )
        ]
        if baseline_target is not None:
            runs.append(
                run_target(
                    gateway,
                    baseline_target,
                    examples,
                    scorers,
                    on_trial=ticker.task(f"baseline  {baseline_target.describe()}", total),
                    **common,  # type: ignore[arg-type]
                )
            )
        results = await asyncio.gather(*runs)
    candidate = results[0]
    if baseline_target is not None:
        baseline = results[1]
    comparison = compare(candidate, baseline)
    judge = _judge_usage(scorers)
    verdict = apply_gate(comparison, suite.gate, baseline_present=baseline is not None)
    return Evaluation(
        suite=suite,
        candidate=candidate,
        baseline=baseline,
        baseline_source=source,
        comparison=comparison,
        verdict=verdict,
        notes=tuple(notes),
        calls=int(getattr(gateway, "calls", 0)),
        judge=judge,
    )


def _judge_usage(scorers: Sequence[Scorer]) -> dict[str, Any]:
    """What the LLM-judge scorers among ``scorers`` spent in this run (zeros without any)."""
    from keel.evals.scorers.judge import judge_usage

    return judge_usage(scorers).as_dict()


def store_evaluation(engine: sa.Engine, evaluation: Evaluation) -> EvalRun:
    """Record the candidate's run: what qualifies a prompt version for promotion when it passed."""
    from keel.evals.report import summary
    from keel.store.evals import record_eval_run

    candidate = evaluation.candidate
    return record_eval_run(
        engine,
        suite=evaluation.suite.name,
        prompt_name=candidate.prompt_name,
        prompt_version=candidate.prompt_version,
        prompt_hash=candidate.prompt_hash,
        dataset_hash=candidate.dataset_hash,
        passed=evaluation.passed,
        summary=summary(evaluation),
        cost_usd=candidate.cost_usd,
    )

"""``keel eval`` (run a suite and gate on it, calibrate a judge, list stored runs) and
``keel dataset add-from-trace`` (turn a production request into a golden example).

``keel eval run`` exits 0 when the gate passes, 1 when it fails, and 2 when
the run could not be trusted to mean anything: a bad suite, dataset or
scorer, an unknown prompt version, an unreachable gateway.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from keel.cli._base import KeelGroup, config_option, dumps, format_usd
from keel.errors import InvalidRequest, KeelError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from keel.evals.client import HttpGatewayClient
    from keel.evals.runner import Evaluation

EXIT_GATE_FAILED = 1
EXIT_ERROR = 2
KEY_ENV = "KEEL_API_KEY"
F = TypeVar("F", bound=Callable[..., Any])


@click.group("eval", cls=KeelGroup)
def eval_() -> None:
    """Eval suites: score a prompt version against a golden set and gate on the result."""


def _fail(message: str) -> NoReturn:
    first, *rest = message.splitlines() or [""]
    click.echo(f"keel: error: {first}", err=True)
    for line in rest:
        click.echo(f"  {line}", err=True)
    sys.exit(EXIT_ERROR)


@contextmanager
def _errors_exit_2() -> Iterator[None]:
    """Anything that stops a run before a verdict exits 2, never 1 (1 is "the gate failed")."""
    from keel.evals.client import CallError

    try:
        yield
    except (KeelError, CallError) as error:
        _fail(error.message)


@contextmanager
def _database(config_path: str, required: bool) -> Iterator[sa.Engine | None]:
    """The config's migrated database; None when no config was given and none is here."""
    source = click.get_current_context().get_parameter_source("config_path")
    defaulted = source is click.core.ParameterSource.DEFAULT
    if not required and defaulted and not Path(config_path).exists():
        yield None
        return
    from keel.config import load_config
    from keel.store import make_engine, upgrade

    engine = make_engine(load_config(config_path).database_url)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()


def _client(
    config_path: str, gateway: str | None, key: str | None, retries: int
) -> HttpGatewayClient:
    from keel.evals.client import HttpGatewayClient, InProcessGatewayClient

    if gateway is None:
        if key is not None:
            raise InvalidRequest("--key goes with --gateway URL", param="key")
        from keel.config import load_config

        return InProcessGatewayClient(load_config(config_path), retries=retries)
    key = key or os.environ.get(KEY_ENV)
    if not key:
        raise InvalidRequest(f"--gateway needs --key (or {KEY_ENV})", param="key")
    return HttpGatewayClient(gateway, key, retries=retries)


gateway_options: list[Callable[[Any], Any]] = [
    click.option(
        "--gateway",
        default=None,
        metavar="URL",
        help="Run against this running gateway instead of in-process from -c.",
    ),
    click.option("--key", default=None, help=f"The gateway key for --gateway (or {KEY_ENV})."),
]


def _with_gateway_options(f: F) -> F:
    for option in reversed(gateway_options):
        f = option(f)
    return f


# --- keel eval run ------------------------------------------------------------------------


@eval_.command("run")
@click.argument("suite_path", metavar="SUITE", type=click.Path(dir_okay=False))
@_with_gateway_options
@click.option(
    "--prompt-version",
    default=None,
    metavar="V",
    help="Score this version of the suite's prompt instead of the one it names.",
)
@click.option(
    "--baseline",
    default=None,
    metavar="B",
    help="Compare with label:NAME, run:ID or none instead of the suite's baseline.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
)
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False))
@click.option("--markdown", "markdown_path", default=None, type=click.Path(dir_okay=False))
@click.option("--junit", "junit_path", default=None, type=click.Path(dir_okay=False))
@click.option("--no-store", is_flag=True, help="Do not record the run in the database.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar (default: when stderr is a terminal).",
)
@config_option
def run(
    suite_path: str,
    gateway: str | None,
    key: str | None,
    prompt_version: str | None,
    baseline: str | None,
    fmt: str,
    json_path: str | None,
    markdown_path: str | None,
    junit_path: str | None,
    no_store: bool,
    progress: bool | None,
    config_path: str,
) -> None:
    """Run SUITE against its target and baseline; exit 0 pass, 1 gate failed, 2 error.

    In-process from keel.yaml (-c) by default, or against a running gateway
    with --gateway URL --key K. The run is stored in the config's database
    (what qualifies a prompt version for `keel prompts promote`).
    """
    with _errors_exit_2():
        evaluation = _run(
            suite_path,
            gateway=gateway,
            key=key,
            prompt_version=prompt_version,
            baseline=baseline,
            store=not no_store,
            progress=progress,
            config_path=config_path,
        )
    _write_reports(evaluation, fmt, json_path, markdown_path, junit_path)
    if not evaluation.passed:
        sys.exit(EXIT_GATE_FAILED)


def _load(suite_path: str, prompt_version: str | None, baseline: str | None) -> Any:
    from keel.evals.suite import Target, load_suite, parse_baseline

    suite = load_suite(suite_path)
    if prompt_version is not None:
        if suite.target.kind != "prompt":
            raise InvalidRequest("--prompt-version needs a prompt target", param="prompt_version")
        suite = suite.with_target(Target("prompt", suite.target.name, version=prompt_version))
    if baseline is not None:
        try:
            suite = replace(suite, baseline=parse_baseline(baseline))
        except ValueError as error:
            raise InvalidRequest(f"--baseline: {error}", param="baseline") from None
    return suite


def _run(
    suite_path: str,
    *,
    gateway: str | None,
    key: str | None,
    prompt_version: str | None,
    baseline: str | None,
    store: bool,
    progress: bool | None,
    config_path: str,
) -> Evaluation:
    from keel.evals.dataset import load_dataset
    from keel.evals.runner import ScorerContext, build_scorers, evaluate, store_evaluation
    from keel.store import EvalRunStore, JudgeCache

    suite = _load(suite_path, prompt_version, baseline)
    dataset = load_dataset(suite.dataset_path)
    with _database(config_path, required=gateway is None) as engine:
        cache = JudgeCache(engine) if engine is not None and suite.judge.cache else None
        scorers = build_scorers(suite, ScorerContext(suite.judge, cache, engine))
        client = _client(config_path, gateway, key, suite.retries)

        async def go() -> Evaluation:
            async with client:
                return await evaluate(
                    suite,
                    dataset.examples,
                    dataset.content_hash,
                    client,
                    scorers,
                    store=None if engine is None else EvalRunStore(engine),
                    progress=progress,
                )

        evaluation = asyncio.run(go())
        if store and engine is not None:
            stored = store_evaluation(engine, evaluation)
            evaluation = replace(evaluation, run_id=stored.id)
        elif store:
            click.echo(
                "note: the run was not stored (no keel.yaml here; pass -c for its database)",
                err=True,
            )
    return evaluation


def _write_reports(
    evaluation: Evaluation,
    fmt: str,
    json_path: str | None,
    markdown_path: str | None,
    junit_path: str | None,
) -> None:
    from keel.evals.report import render_table, to_json, to_junit, to_markdown

    files: list[tuple[str | None, Callable[[], str]]] = [
        (json_path, lambda: dumps(to_json(evaluation)) + "\n"),
        (markdown_path, lambda: to_markdown(evaluation)),
        (junit_path, lambda: to_junit(evaluation)),
    ]
    for path, text in files:
        if path is None:
            continue
        try:
            Path(path).write_text(text(), encoding="utf-8")
        except OSError as error:
            _fail(f"cannot write {path}: {error.strerror}")
    if fmt == "json":
        click.echo(dumps(to_json(evaluation)))
    elif fmt == "markdown":
        click.echo(to_markdown(evaluation), nl=False)
    else:
        from rich.console import Console

        render_table(evaluation, Console(highlight=False))


# --- keel eval calibrate -----------------------------------------------------------------


@eval_.command("calibrate")
@click.option(
    "--labels",
    "labels_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="JSONL of human labels: {id, output, pass, score?, reference?, context?}.",
)
@click.option("--judge", "alias", default=None, metavar="ALIAS", help="The judge's model alias.")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["judge", "groundedness"]),
    default="judge",
    show_default=True,
)
@click.option("--rubric", default=None, help="The rubric a `judge` scorer applies.")
@click.option("--scale", type=click.Choice(["1-5", "0-1"]), default=None)
@click.option("--threshold", type=float, default=None, help="Pass at this normalised score.")
@click.option(
    "--suite",
    "suite_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Take the judge spec from this suite (with --scorer).",
)
@click.option("--scorer", "scorer_name", default=None, help="The judge scorer's name in --suite.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True)
@_with_gateway_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@config_option
def calibrate(
    labels_path: str,
    alias: str | None,
    kind: str,
    rubric: str | None,
    scale: str | None,
    threshold: float | None,
    suite_path: str | None,
    scorer_name: str | None,
    concurrency: int,
    gateway: str | None,
    key: str | None,
    fmt: str,
    config_path: str,
) -> None:
    """How often the judge agrees with human labels (Cohen's kappa, Spearman).

    Exit 1 when kappa is below 0.6: a judge that disagrees with humans is
    noise, not a gate.
    """
    with _errors_exit_2():
        spec = _judge_spec(alias, kind, rubric, scale, threshold, suite_path, scorer_name)
        result = _calibrate(Path(labels_path), spec, concurrency, gateway, key, config_path)
    if fmt == "json":
        click.echo(dumps(result.as_dict()))
    else:
        _print_calibration(result)
    if not result.trustworthy:
        sys.exit(EXIT_GATE_FAILED)


def _judge_spec(
    alias: str | None,
    kind: str,
    rubric: str | None,
    scale: str | None,
    threshold: float | None,
    suite_path: str | None,
    scorer_name: str | None,
) -> dict[str, Any]:
    if suite_path is not None:
        from keel.evals.suite import load_suite

        suite = load_suite(suite_path)
        for given in suite.scorers:
            name = given.get("name") or given.get("type")
            if scorer_name in (None, name) and given.get("type") in ("judge", "groundedness"):
                found = dict(given)
                found.pop("name", None)
                if alias is not None:
                    found["alias"] = alias
                elif "alias" not in found and suite.judge.alias is not None:
                    found["alias"] = suite.judge.alias
                return found
        raise InvalidRequest(
            f"--scorer: {suite_path} has no judge scorer named {scorer_name!r}", param="scorer"
        )
    if alias is None:
        raise InvalidRequest("--judge ALIAS is required (or --suite with --scorer)", param="judge")
    spec: dict[str, Any] = {"type": kind, "alias": alias}
    if kind == "judge":
        spec["rubric"] = rubric or "The answer is correct, relevant and complete."
        if scale is not None:
            spec["scale"] = scale
    if threshold is not None:
        spec["threshold"] = threshold
    return spec


def _calibrate(
    labels: Path,
    spec: dict[str, Any],
    concurrency: int,
    gateway: str | None,
    key: str | None,
    config_path: str,
) -> Any:
    from keel.evals.calibrate import run_calibration
    from keel.store import JudgeCache

    with _database(config_path, required=gateway is None) as engine:
        client = _client(config_path, gateway, key, retries=2)
        cache = None if engine is None else JudgeCache(engine)

        async def go() -> Any:
            async with client:
                return await run_calibration(
                    labels, client, spec, cache=cache, concurrency=concurrency
                )

        return asyncio.run(go())


def _print_calibration(result: Any) -> None:
    data = result.as_dict()

    def num(x: float | None) -> str:
        return "undefined" if x is None else f"{x:.3f}"

    click.echo(f"examples: {data['n']} (judge errors: {data['errors']})")
    click.echo(f"agreement: {data['accuracy'] * 100:.1f}%")
    click.echo(f"Cohen's kappa (pass/fail): {num(data['kappa'])}  (floor {data['kappa_floor']})")
    click.echo(f"Spearman (scores): {num(data['spearman'])}  over {data['scored']} scored")
    confusion = data["confusion"]
    click.echo(
        "judge pass / human pass: {both_pass}, judge pass / human fail: {judge_pass_human_fail},"
        " judge fail / human pass: {judge_fail_human_pass}, both fail: {both_fail}".format(
            **confusion
        )
    )
    if data["disagreements"]:
        click.echo("disagreements: " + ", ".join(data["disagreements"][:20]))
    if data["warning"]:
        click.echo(f"warning: {data['warning']}")


# --- keel eval runs -----------------------------------------------------------------------


@eval_.command("runs")
@click.option("--suite", default=None, help="Only this suite's runs.")
@click.option("--prompt", "prompt_name", default=None, help="Only runs of this prompt.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@config_option
def runs(
    suite: str | None, prompt_name: str | None, limit: int, fmt: str, config_path: str
) -> None:
    """Stored eval runs, newest first: suite, target, verdict, pass rate, cost."""
    from keel.store import EvalRunStore

    with _database(config_path, required=True) as engine:
        assert engine is not None
        found = EvalRunStore(engine).list(suite=suite, prompt_name=prompt_name, limit=limit)
    if fmt == "json":
        rows = []
        for r in found:
            row = r.as_dict()
            row["summary"] = {k: v for k, v in row["summary"].items() if k != "examples"}
            rows.append(row)
        click.echo(dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, caption=None if found else "no eval runs yet")
    for column in ("id", "at (UTC)", "suite", "target", "verdict", "pass rate", "n", "cost"):
        table.add_column(column, overflow="fold")
    for r in found:
        target = r.summary.get("target") or (
            f"{r.prompt_name}@{r.prompt_version}" if r.prompt_name else "-"
        )
        rate = r.summary.get("pass_rate")
        table.add_row(
            str(r.id),
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            r.suite,
            str(target),
            "passed" if r.passed else "FAILED",
            "-" if rate is None else f"{rate * 100:.1f}%",
            str(r.summary.get("n", "-")),
            "unknown" if r.cost_usd is None else format_usd(r.cost_usd),
        )
    Console(highlight=False).print(table)


# --- keel dataset --------------------------------------------------------------------------


@click.group("dataset", cls=KeelGroup)
def dataset() -> None:
    """Golden sets: grow them from production traffic."""


@dataset.command("add-from-trace")
@click.argument("request_id")
@click.option(
    "--dataset",
    "dataset_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The dataset file to append to (JSONL or YAML; created if absent).",
)
@click.option("--expected", default=None, help="The expected answer, as text.")
@click.option(
    "--expected-json", default=None, help="The expected answer as JSON (a label, number, object)."
)
@click.option("--reference", default=None, help="A reference answer for similarity and judges.")
@click.option(
    "--id", "example_id", default=None, help="The example's id (default: the request id)."
)
@click.option("--tag", "tags", multiple=True, help="A tag for slices; repeatable.")
@config_option
def add_from_trace(
    request_id: str,
    dataset_path: str,
    expected: str | None,
    expected_json: str | None,
    reference: str | None,
    example_id: str | None,
    tags: tuple[str, ...],
    config_path: str,
) -> None:
    """Turn stored request REQUEST_ID into a golden example in --dataset.

    Needs the request's captured body (telemetry.capture_content): a prompt
    request gives its variables, a plain one its messages.
    """
    from keel.cli._base import open_database
    from keel.errors import NotFound
    from keel.evals.dataset import append_example, example_from_trace
    from keel.store import RequestStore

    if expected is not None and expected_json is not None:
        raise InvalidRequest("give --expected or --expected-json, not both", param="expected")
    wanted: Any = expected
    if expected_json is not None:
        import orjson

        try:
            wanted = orjson.loads(expected_json)
        except orjson.JSONDecodeError as error:
            raise InvalidRequest(f"--expected-json: not JSON: {error}", param="expected") from None
    with open_database(config_path) as (_, engine):
        stored = RequestStore(engine).get(request_id, tenant=None)
    if stored is None:
        raise NotFound(f"no stored request {request_id!r}", param="request_id")
    example = example_from_trace(
        stored.as_dict(), id=example_id, expected=wanted, reference=reference, tags=tags
    )
    updated = append_example(dataset_path, example)
    click.echo(
        f"added example {example.id} to {dataset_path}"
        f" ({len(updated.examples)} examples, {updated.content_hash[:19]})"
    )

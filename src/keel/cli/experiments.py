"""``keel rollout`` and ``keel experiment``: start, watch, steer and read experiments.

``keel rollout`` drives an experiment's lifecycle (start from a file, status,
pause, resume, advance, rollback); every change is an audited event with the
actor ``--actor`` names, ``cli:<os user>`` by default. ``keel experiment``
reads: a fixed A/B report with intervals and tests, and sample sizes.
Running gateways apply a change within 5 seconds.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keel._time import parse_iso_time
from keel.cli._base import KeelGroup, config_option, dumps, format_usd, open_database
from keel.cli.tenants import TABLE_OR_JSON, actor_option, default_actor
from keel.errors import InvalidRequest

if TYPE_CHECKING:
    from rich.table import Table
    from sqlalchemy import Engine

    from keel.config import KeelConfig
    from keel.experiments.spec import Experiment
    from keel.store import Applied, ExperimentEvent, ExperimentRecord, ExperimentStore

# What replicas promise: they re-read active experiments every second (docs/experiments.md).
PROPAGATION = "running gateways apply it within 5 seconds"


def load_experiment_file(path: str) -> Experiment:
    """The experiment file at ``path``, validated; errors name the file and the field."""
    import yaml
    from pydantic import ValidationError

    from keel.config import format_path
    from keel.experiments.spec import Experiment

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidRequest(f"{path}: cannot read it: {error.strerror}", param="FILE") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise InvalidRequest(f"{path}: not valid YAML{line}", param="FILE") from None
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected a mapping of experiment fields", param="FILE")
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = format_path(tuple(first["loc"]))
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise InvalidRequest(f"{path}: {field}: {message}", param=field) from None


def experiment_store(config: KeelConfig, engine: Engine) -> ExperimentStore:
    """A store that accepts only the model aliases ``config`` defines."""
    from keel.store import ExperimentStore

    return ExperimentStore(engine, aliases=[model.alias for model in config.models])


def _pct(value: float) -> str:
    return f"{value:g} %"


def shares_text(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {_pct(share)}" for name, share in shares.items())


def step_text(record: ExperimentRecord) -> str:
    if not record.steps:
        return "-"
    return f"{record.step_index + 1}/{len(record.steps)} ({_pct(record.steps[record.step_index])})"


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _print_applied(applied: Applied, fmt: str) -> None:
    record, event = applied.record, applied.event
    if fmt == "json":
        payload = record.as_dict()
        payload["event"] = None if event is None else event.as_dict()
        click.echo(dumps(payload))
        return
    action = event.action if event is not None else "unchanged"
    done = {
        "pause": "paused",
        "resume": "resumed",
        "advance": "advanced",
        "rollback": "rolled back",
        "complete": "completed",
    }.get(action, action)
    click.echo(
        f"{done} {record.name}: {record.status}, step {step_text(record)},"
        f" shares {shares_text(record.shares)}; {PROPAGATION}"
    )
    promotion = (event.numbers.get("promotion") if event is not None else None) or None
    if promotion:
        click.echo(
            f"promoted {promotion['prompt']} {promotion['version']} to {promotion['label']}"
            " (forced: the rollout's guard metrics were its gate)"
        )


# --- keel rollout -------------------------------------------------------------------------


@click.group(cls=KeelGroup)
def rollout() -> None:
    """Rollouts: start an experiment file, watch it, pause, resume, advance or roll back."""


@rollout.command("start")
@click.argument("file", type=click.Path(dir_okay=False))
@actor_option
@TABLE_OR_JSON
@config_option
def start(file: str, actor: str | None, fmt: str, config_path: str) -> None:
    """Start the experiment in FILE (a ramp, a fixed split or shadow mode)."""
    spec = load_experiment_file(file)
    with open_database(config_path) as (config, engine):
        record = experiment_store(config, engine).start(spec, actor or default_actor())
    if fmt == "json":
        click.echo(dumps(record.as_dict()))
        return
    click.echo(
        f"started {record.mode} {record.name}: step {step_text(record)},"
        f" shares {shares_text(record.shares)}; {PROPAGATION}"
    )


@rollout.command("status")
@click.argument("name", required=False)
@click.option("--events", "event_rows", type=click.IntRange(0, 1000), default=5, show_default=True)
@TABLE_OR_JSON
@config_option
def status(name: str | None, event_rows: int, fmt: str, config_path: str) -> None:
    """Every experiment, or NAME's step, shares, per-variant metrics and last decisions."""
    with open_database(config_path) as (config, engine):
        store = experiment_store(config, engine)
        if name is None:
            records = store.list()
            last = {r.name: next(iter(store.events(r.name, limit=1)), None) for r in records}
            _print_list(records, last, fmt)
            return
        record = store.get(name)
        events = store.events(name, limit=max(1, event_rows))
        from keel.experiments.metrics_query import variant_metrics
        from keel.experiments.report import summarize

        metrics = variant_metrics(engine, name, record.step_started_at, spec=record.spec)
    summaries = {variant: summarize(m) for variant, m in metrics.items()}
    if fmt == "json":
        click.echo(
            dumps(
                {
                    **record.as_dict(),
                    "metrics": summaries,
                    "events": [e.as_dict() for e in events[:event_rows]],
                }
            )
        )
        return
    _print_status(record, summaries, events[:event_rows])


def _print_list(
    records: list[ExperimentRecord], last: dict[str, ExperimentEvent | None], fmt: str
) -> None:
    if fmt == "json":
        click.echo(
            dumps(
                [
                    {**r.as_dict(), "last_event": (e.as_dict() if (e := last[r.name]) else None)}
                    for r in records
                ]
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, caption=None if records else "no experiments yet")
    for column in ("name", "mode", "status", "step", "shares", "last decision", "updated (UTC)"):
        table.add_column(column, overflow="fold")
    for r in records:
        event = last[r.name]
        decided = "-" if event is None else f"{event.action} by {event.actor}"
        table.add_row(
            r.name,
            r.mode,
            r.status,
            step_text(r),
            shares_text(r.shares),
            decided,
            _when(r.updated_at),
        )
    Console(highlight=False).print(table)


def _num(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _metrics_table(record: ExperimentRecord, summaries: dict[str, dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, title="this step's traffic", title_justify="left")
    columns = ("variant", "share", "n", "errors", "p95 ms", "cost/req", "thumbs down", "judge")
    for column in columns:
        table.add_column(column, no_wrap=True)
    control = record.spec.control.name
    for variant, s in summaries.items():
        cost = s["cost_per_request_usd"]
        table.add_row(
            f"{variant} (control)" if variant == control else variant,
            _pct(record.shares.get(variant, 0.0)),
            str(s["n"]),
            _num(None if s["error_rate"] is None else s["error_rate"] * 100, ".2f", " %"),
            _num(s["p95_latency_ms"], ".0f"),
            "-" if cost is None else format_usd(cost),
            _num(
                None if s["thumbs_down_rate"] is None else s["thumbs_down_rate"] * 100,
                ".1f",
                f" % of {s['rated']}",
            ),
            _num(s["judge_score"], ".3f"),
        )
    return table


def _print_status(
    record: ExperimentRecord,
    summaries: dict[str, dict[str, Any]],
    events: list[ExperimentEvent],
) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[bold]{record.mode} {record.name}[/]  {record.status}")
    console.print(f"  step: {step_text(record)} since {_when(record.step_started_at)} UTC")
    console.print(f"  shares: {shares_text(record.shares)}")
    console.print(_metrics_table(record, summaries))
    if not events:
        return
    latest = events[0]
    console.print(
        f"last decision: [bold]{latest.action}[/] by {escape(latest.actor)}"
        f" at {_when(latest.at)} UTC"
    )
    for reason in latest.reasons:
        console.print(f"  - {escape(reason)}")
    if len(events) > 1:
        console.print(_events_table(events[1:]))


def _events_table(events: list[ExperimentEvent]) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, title="earlier events", title_justify="left")
    for column in ("at (UTC)", "action", "actor", "step", "reasons"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(
            _when(e.at), e.action, e.actor, str(e.step_index + 1), "; ".join(e.reasons) or "-"
        )
    return table


def _steer(
    name: str, action: str, reason: str | None, actor: str | None, config_path: str
) -> Applied:
    with open_database(config_path) as (config, engine):
        store = experiment_store(config, engine)
        who = actor or default_actor()
        if action == "pause":
            return store.pause(name, who, reason=reason)
        if action == "resume":
            return store.resume(name, who, reason=reason)
        if action == "advance":
            return store.advance(name, who, reason=reason)
        return store.rollback(name, who, reason=reason or "")


_REASON = click.option("--reason", default=None, help="Why, for the event log and the audit log.")


@rollout.command("pause")
@click.argument("name")
@_REASON
@actor_option
@TABLE_OR_JSON
@config_option
def pause(name: str, reason: str | None, actor: str | None, fmt: str, config_path: str) -> None:
    """Stop the controller moving NAME; gateways keep its current shares."""
    _print_applied(_steer(name, "pause", reason, actor, config_path), fmt)


@rollout.command("resume")
@click.argument("name")
@_REASON
@actor_option
@TABLE_OR_JSON
@config_option
def resume(name: str, reason: str | None, actor: str | None, fmt: str, config_path: str) -> None:
    """Let the controller analyse and move NAME again."""
    _print_applied(_steer(name, "resume", reason, actor, config_path), fmt)


@rollout.command("advance")
@click.argument("name")
@_REASON
@actor_option
@TABLE_OR_JSON
@config_option
def advance(name: str, reason: str | None, actor: str | None, fmt: str, config_path: str) -> None:
    """Move ramp NAME to its next step now; past the last step, complete it."""
    _print_applied(_steer(name, "advance", reason, actor, config_path), fmt)


@rollout.command("rollback")
@click.argument("name")
@click.option("--reason", required=True, help="Why; recorded and audited.")
@actor_option
@TABLE_OR_JSON
@config_option
def rollback(name: str, reason: str, actor: str | None, fmt: str, config_path: str) -> None:
    """Give NAME's control 100 % of the traffic and end the experiment."""
    _print_applied(_steer(name, "rollback", reason, actor, config_path), fmt)


# --- keel experiment ----------------------------------------------------------------------


@click.group(cls=KeelGroup)
def experiment() -> None:
    """Experiment readouts: a fixed A/B report, and the sample size an effect needs."""


def _since_option(text: str | None) -> datetime | None:
    return None if text is None else parse_iso_time(text, "--since")


@experiment.command("report")
@click.argument("name")
@click.option("--since", default=None, help="Start of the window (ISO time) [default: its start].")
@TABLE_OR_JSON
@config_option
def report(name: str, since: str | None, fmt: str, config_path: str) -> None:
    """NAME's per-variant metrics with 95 % intervals, tests and chance to beat control."""
    from keel.experiments.metrics_query import variant_metrics
    from keel.experiments.report import ab_report

    start = _since_option(since)
    with open_database(config_path) as (config, engine):
        record = experiment_store(config, engine).get(name)
        window = start or record.created_at
        metrics = variant_metrics(engine, name, window, spec=record.spec)
    result = ab_report(record.spec, metrics)
    result["since"] = window.isoformat()
    if fmt == "json":
        click.echo(dumps(result))
        return
    _print_report(result)


def _interval(cell: dict[str, Any], scale: float = 1.0, spec: str = ".2f") -> str:
    if cell["value"] is None:
        return "-"
    text = f"{cell['value'] * scale:{spec}}"
    if cell["lower"] is not None:
        text += f" [{cell['lower'] * scale:{spec}}, {cell['upper'] * scale:{spec}}]"
    return text


_ROWS = (
    ("error rate %", "error_rate", 100.0, ".2f"),
    ("thumbs down %", "thumbs_down_rate", 100.0, ".1f"),
    ("guardrail flags %", "guardrail_flag_rate", 100.0, ".2f"),
    ("latency ms (mean)", "latency_ms", 1.0, ".0f"),
    ("cost/req $", "cost_per_request_usd", 1.0, ".6f"),
    ("judge score", "judge_score", 1.0, ".3f"),
)


def _print_report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    variants: dict[str, Any] = result["variants"]
    console.print(f"[bold]experiment {result['experiment']}[/] since {result['since']}")
    table = Table(box=None, pad_edge=False, title="per variant (95 % intervals)")
    table.add_column("metric", no_wrap=True)
    for variant in variants:
        label = f"{variant} (control)" if variant == result["control"] else variant
        table.add_column(label, overflow="fold")
    table.add_row("n", *(str(v["n"]) for v in variants.values()))
    for label, key, scale, spec in _ROWS:
        table.add_row(label, *(_interval(v[key], scale, spec) for v in variants.values()))
    console.print(table)
    for candidate, tests in result["comparisons"].items():
        rows = Table(box=None, pad_edge=False, title=f"{candidate} vs {result['control']}")
        for column in ("metric", "difference [95 %]", "p", "chance to beat control"):
            rows.add_column(column, overflow="fold")
        for label, key, scale, spec in _ROWS:
            test = tests.get(key)
            if key == "guardrail_flag_rate":
                continue
            if test is None or test["difference"] is None:
                rows.add_row(label, "too little data", "-", "-")
                continue
            diff = f"{test['difference'] * scale:+{spec}}"
            if test["lower"] is not None:
                diff += f" [{test['lower'] * scale:+{spec}}, {test['upper'] * scale:+{spec}}]"
            chance = test.get("chance_to_beat_control")
            rows.add_row(
                label,
                diff,
                f"{test['p_value']:.3g}" if test["p_value"] is not None else "-",
                "-" if chance is None else f"{chance:.1%}",
            )
        console.print(rows)


@experiment.command("size")
@click.option("--baseline-rate", type=float, required=True, help="Control's rate, e.g. 0.1.")
@click.option("--mde", type=float, required=True, help="Smallest change to detect, e.g. 0.02.")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="False-positive rate.")
@click.option("--power", type=float, default=0.8, show_default=True, help="Chance to detect it.")
@click.option("--one-sided", is_flag=True, help="Test one direction only.")
@TABLE_OR_JSON
def size(
    baseline_rate: float, mde: float, alpha: float, power: float, one_sided: bool, fmt: str
) -> None:
    """Samples per variant a fixed A/B test needs to detect a rate change of --mde."""
    from keel.experiments.sizing import sample_size

    for option, value in (
        ("--baseline-rate", baseline_rate),
        ("--alpha", alpha),
        ("--power", power),
    ):
        if not 0 < value < 1:
            raise InvalidRequest(
                f"{option}: expected a number between 0 and 1, got {value:g}", param=option
            )
    try:
        n = sample_size(baseline_rate, mde, alpha=alpha, power=power, two_sided=not one_sided)
    except ValueError as error:
        raise InvalidRequest(f"--mde: {error}", param="--mde") from None
    if fmt == "json":
        click.echo(
            dumps(
                {
                    "baseline_rate": baseline_rate,
                    "mde": mde,
                    "alpha": alpha,
                    "power": power,
                    "two_sided": not one_sided,
                    "per_variant": n,
                    "total_two_variants": 2 * n,
                }
            )
        )
        return
    sides = "one-sided" if one_sided else "two-sided"
    click.echo(
        f"{n:,} samples per variant ({2 * n:,} for two variants) to detect"
        f" {baseline_rate:g} → {baseline_rate + mde:g} with {power:.0%} power at"
        f" alpha {alpha:g} ({sides})"
    )

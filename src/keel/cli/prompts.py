"""``keel prompts``: lint and push prompt files, move labels, read history and diffs.

Versions are immutable once pushed; labels move only through ``promote``
(which needs a passing eval run, or ``--force --reason``) and ``rollback``.
Every label move is audited with the actor ``--actor`` names, ``cli:<os
user>`` by default. Running gateways pick a label move up within 5 seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keel.cli._base import DEFAULT_CONFIG, KeelGroup, config_option, dumps, open_database
from keel.cli.tenants import TABLE_OR_JSON, actor_option, default_actor
from keel.errors import InvalidRequest

if TYPE_CHECKING:
    from keel.prompts import Finding
    from keel.store import LabelMove, PromptLabel, PromptRegistry, PromptVersion

Aliases = list[str] | None

# What replicas promise: they poll the label feed every second (docs/prompt-registry.md).
PROPAGATION = "running gateways serve it within 5 seconds"


@click.group(cls=KeelGroup)
def prompts() -> None:
    """Prompt registry: lint, push, promote, roll back; versions never change once pushed."""


# --- lint and push ----------------------------------------------------------------------


@contextmanager
def _lint_registry(
    config_path: str, offline: bool
) -> Iterator[tuple[PromptRegistry | None, Aliases]]:
    """The registry and aliases to lint against, or (None, None) to lint the files alone.

    Without ``-c``, a missing keel.yaml means "no registry here", not an error.
    """
    from keel.store import PromptRegistry

    source = click.get_current_context().get_parameter_source("config_path")
    defaulted = source is click.core.ParameterSource.DEFAULT
    if offline or (defaulted and config_path == DEFAULT_CONFIG and not Path(config_path).exists()):
        yield None, None
        return
    with open_database(config_path) as (config, engine):
        yield PromptRegistry(engine), [model.alias for model in config.models]


def _lint(directory: str, registry: PromptRegistry | None, aliases: Aliases) -> list[Finding]:
    from keel.prompts import lint_dir

    view = None if registry is None else registry.lint_view()
    return lint_dir(directory, view, aliases=aliases)


def _print_findings(findings: Sequence[Finding], fmt: str, *, against: str) -> int:
    """Print the findings; the number of errors among them."""
    errors = sum(1 for f in findings if f.severity == "error")
    if fmt == "json":
        click.echo(dumps({"errors": errors, "findings": [finding_dict(f) for f in findings]}))
        return errors
    if findings:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for column in ("severity", "file", "field"):
            table.add_column(column, no_wrap=True)
        table.add_column("problem", overflow="fold")
        for f in findings:
            style = "red" if f.severity == "error" else "yellow"
            where = escape(f.file or f.name or "-")
            field = escape(f.field or "-")
            table.add_row(f"[{style}]{f.severity}[/]", where, field, escape(f.message))
        Console(highlight=False).print(table)
    warnings = len(findings) - errors
    click.echo(f"checked {against}: {errors} error(s), {warnings} warning(s)")
    return errors


def finding_dict(f: Finding) -> dict[str, Any]:
    """A lint finding, JSON-ready."""
    return {
        "severity": f.severity,
        "file": f.file,
        "name": f.name,
        "field": f.field,
        "message": f.message,
    }


@prompts.command("lint")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--offline",
    is_flag=True,
    help="Check the files alone, without comparing them with the registry.",
)
@TABLE_OR_JSON
@config_option
def lint_(directory: str, offline: bool, fmt: str, config_path: str) -> None:
    """Check the prompt files in DIRECTORY; exit 1 when any check fails.

    Schema, template variables and, against the registry of keel.yaml's
    database, semver discipline: a changed variables shape needs a major
    bump, and a pushed version may not be reused for other content.
    """
    with _lint_registry(config_path, offline) as (registry, aliases):
        findings = _lint(directory, registry, aliases)
    against = "against the registry" if registry is not None else "without the registry"
    if _print_findings(findings, fmt, against=against):
        sys.exit(1)


@prompts.command("push")
@click.argument("directory", type=click.Path(file_okay=False))
@actor_option
@TABLE_OR_JSON
@config_option
def push(directory: str, actor: str | None, fmt: str, config_path: str) -> None:
    """Lint the prompt files in DIRECTORY, then store every new version.

    Identical content already pushed is left as it is; if any check fails,
    nothing is pushed (exit 1).
    """
    from keel.prompts.loader import load_prompt_dir
    from keel.store import PromptRegistry

    with open_database(config_path) as (config, engine):
        registry = PromptRegistry(engine)
        findings = _lint(directory, registry, [model.alias for model in config.models])
        if any(f.severity == "error" for f in findings):
            _print_findings(findings, fmt, against="against the registry")
            click.echo("nothing pushed", err=True)
            sys.exit(1)
        results = registry.push(load_prompt_dir(directory), actor=actor or default_actor())
    if fmt == "json":
        click.echo(dumps([r.as_dict() for r in results]))
        return
    for r in results:
        click.echo(f"{r.status:<9}  {r.name} {r.version}  {r.content_hash[:19]}")
    new = sum(1 for r in results if r.status == "new")
    click.echo(f"{new} new, {len(results) - new} unchanged")


@prompts.command("codegen")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--output",
    default="-",
    show_default=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="The Python module to write; - prints it.",
)
def codegen(directory: str, output: str) -> None:
    """Write typed pydantic models of the variables of each prompt in DIRECTORY.

    Call sites that build ``RagAnswerVariables(question=...)`` fail at
    type-check time, not with a 422 in production. No database is needed.
    """
    from keel.prompts import codegen as generate
    from keel.prompts.loader import load_prompt_dir

    files = load_prompt_dir(directory)
    source = generate(files)
    if output == "-":
        click.echo(source, nl=False)
        return
    try:
        Path(output).write_text(source, encoding="utf-8")
    except OSError as error:
        raise InvalidRequest(
            f"--output: cannot write {output}: {error.strerror}", param="output"
        ) from None
    click.echo(f"wrote {len(files)} prompt model(s) to {output}")


# --- labels -----------------------------------------------------------------------------


@prompts.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--label", default="production", show_default=True, help="The label to move.")
@click.option("--force", is_flag=True, help="Promote without a passing eval run (audited).")
@click.option("--reason", default=None, help="Why; required with --force.")
@actor_option
@TABLE_OR_JSON
@config_option
def promote(
    name: str,
    version: str,
    label: str,
    force: bool,
    reason: str | None,
    actor: str | None,
    fmt: str,
    config_path: str,
) -> None:
    """Point LABEL of prompt NAME at VERSION; needs a passing eval run of that version."""
    from keel.store import PromptRegistry

    if force and not (reason or "").strip():
        raise InvalidRequest('--force needs --reason "why"', param="reason")
    with open_database(config_path) as (_, engine):
        move = PromptRegistry(engine).promote(
            name, version, label, actor or default_actor(), force=force, reason=reason
        )
    if fmt == "json":
        click.echo(dumps(None if move is None else move.as_dict()))
    elif move is None:
        click.echo(f"{name} {label} already points at {version}; nothing changed")
    else:
        _print_move(move)


@prompts.command("rollback")
@click.argument("name")
@click.option("--label", default="production", show_default=True, help="The label to move back.")
@click.option("--reason", default=None, help="Why, for the history and the audit log.")
@actor_option
@TABLE_OR_JSON
@config_option
def rollback(
    name: str, label: str, reason: str | None, actor: str | None, fmt: str, config_path: str
) -> None:
    """Move LABEL of prompt NAME back to the version it served before the current one."""
    from keel.store import PromptRegistry

    with open_database(config_path) as (_, engine):
        move = PromptRegistry(engine).rollback(name, label, actor or default_actor(), reason=reason)
    if fmt == "json":
        click.echo(dumps(move.as_dict()))
    else:
        _print_move(move)


def _print_move(move: LabelMove) -> None:
    was = f" (was {move.from_version})" if move.from_version else ""
    if move.kind == "rollback":
        how = "rolled back"
    elif move.forced:
        how = f"FORCED past the eval gate: {move.reason}"
    else:
        how = f"qualified by eval run #{move.eval_run_id}"
    click.echo(f"{move.name} {move.label} → {move.to_version}{was}, {how}; {PROPAGATION}")


# --- reads ------------------------------------------------------------------------------


@prompts.command("history")
@click.argument("name")
@click.option("--label", default=None, help="Only this label's moves.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@TABLE_OR_JSON
@config_option
def history(name: str, label: str | None, limit: int, fmt: str, config_path: str) -> None:
    """Every label move of prompt NAME, newest first: who, when, why, and the eval run."""
    from keel.store import PromptRegistry

    with open_database(config_path) as (_, engine):
        moves = PromptRegistry(engine).history(name, label=label, limit=limit)
    if fmt == "json":
        click.echo(dumps([m.as_dict() for m in moves]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, caption=None if moves else "no label moves yet")
    for column in ("at (UTC)", "label", "move", "version", "actor", "eval run", "reason"):
        table.add_column(column, overflow="fold")
    for m in moves:
        kind = "promote (forced)" if m.forced else m.kind
        run = "-" if m.eval_run_id is None else f"#{m.eval_run_id}"
        versions = f"{m.from_version or '-'} → {m.to_version}"
        when = m.at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, m.label, kind, versions, m.actor, run, m.reason or "-")
    Console(highlight=False).print(table)


@prompts.command("diff")
@click.argument("name")
@click.argument("v1")
@click.argument("v2")
@config_option
def diff(name: str, v1: str, v2: str, config_path: str) -> None:
    """What changed in prompt NAME from version V1 to V2 (a unified diff of their content)."""
    from keel.store import PromptRegistry

    with open_database(config_path) as (_, engine):
        text = PromptRegistry(engine).diff(name, v1, v2)
    click.echo(text.rstrip("\n") if text.strip() else f"{name} {v1} and {v2} have the same content")


@prompts.command("list")
@TABLE_OR_JSON
@config_option
def list_(fmt: str, config_path: str) -> None:
    """Every pushed prompt: its highest version, how many versions, and its labels."""
    from keel.store import PromptRegistry

    with open_database(config_path) as (_, engine):
        summaries = PromptRegistry(engine).list_prompts()
    if fmt == "json":
        click.echo(dumps([s.as_dict() for s in summaries]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, caption=None if summaries else "no prompts pushed yet")
    for column in ("name", "latest", "versions", "labels", "pushed (UTC)"):
        table.add_column(column, overflow="fold")
    for s in summaries:
        labels = ", ".join(f"{label}={version}" for label, version in s.labels.items())
        when = s.updated_at.strftime("%Y-%m-%d %H:%M")
        table.add_row(s.name, s.latest, str(s.versions), labels or "-", when)
    Console(highlight=False).print(table)


@prompts.command("show")
@click.argument("name")
@click.option("--label", default=None, help="Show the version this label points at.")
@click.option("--version", "version", default=None, help="Show this version.")
@TABLE_OR_JSON
@config_option
def show(name: str, label: str | None, version: str | None, fmt: str, config_path: str) -> None:
    """Prompt NAME's versions and labels; with --label or --version, that version's file."""
    from keel.store import PromptRegistry

    if label is not None and version is not None:
        raise InvalidRequest("give --label or --version, not both", param="--label")
    with open_database(config_path) as (_, engine):
        registry = PromptRegistry(engine)
        if label is not None:
            found = registry.resolve(name, label)
        elif version is not None:
            found = registry.get(name, version)
        else:
            versions, labels = registry.versions(name), registry.labels(name)
            if not versions:
                registry.history(name)  # raises NotFound naming the prompt
            _print_versions(name, versions, labels, fmt)
            return
    if fmt == "json":
        click.echo(dumps(found.as_dict()))
        return
    import yaml

    click.echo(f"# {found.name} {found.version}  {found.content_hash}")
    click.echo(f"# pushed {found.created_at:%Y-%m-%d %H:%M} UTC by {found.created_by}")
    prompt = found.prompt()
    document = prompt.model_dump(mode="json", exclude_defaults=True)
    if prompt.variables:  # each variable in full: `question: {}` would hide its type
        document["variables"] = {
            name: spec.model_dump(mode="json", exclude_none=True)
            for name, spec in prompt.variables.items()
        }
    click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True).rstrip())


def _print_versions(
    name: str, versions: Sequence[PromptVersion], labels: Sequence[PromptLabel], fmt: str
) -> None:
    if fmt == "json":
        click.echo(
            dumps(
                {
                    "name": name,
                    "versions": [v.as_dict(content=False) for v in versions],
                    "labels": {x.label: x.version for x in labels},
                }
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    pointed: dict[str, list[str]] = {}
    for x in labels:
        pointed.setdefault(x.version, []).append(x.label)
    table = Table(box=None, pad_edge=False, title=f"prompt {name}", title_justify="left")
    for column in ("version", "labels", "content hash", "pushed (UTC)", "by"):
        table.add_column(column, overflow="fold")
    for v in reversed(versions):
        table.add_row(
            v.version,
            ", ".join(pointed.get(v.version, [])) or "-",
            v.content_hash[:19],
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            v.created_by,
        )
    Console(highlight=False).print(table)

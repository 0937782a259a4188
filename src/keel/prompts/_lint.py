"""``keel prompts lint``: everything wrong with a folder of prompts, before it is pushed.

Checks, in order, per prompt (errors fail CI; warnings are printed):

- the file parses and matches the format (error), the name is unique (error)
  and matches the file name (warning);
- each template compiles (error);
- every variable a template reads is declared (error); every declared
  variable is read by some template (warning);
- each variable spec is consistent: bounds fit the type, ``default`` and
  ``enum`` values are valid for the spec (error);
- ``output_schema`` is a valid JSON Schema (error);
- ``model`` names a known alias, when aliases are given (error);
- semver discipline against the registry, when one is given (see
  :func:`check_versions`).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from jinja2 import TemplateSyntaxError, meta
from pydantic import ValidationError

from keel.prompts._render import make_environment
from keel.prompts._variables import is_required, show, spec_problems
from keel.prompts._yaml import canonical_yaml
from keel.prompts.loader import PromptSource, read_prompt_dir
from keel.prompts.model import PromptFile, VariableSpec, content_hash, content_of, semver
from keel.prompts.versions import version_key

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One lint result. ``file`` is known when the prompt was read from one."""

    file: str | None
    name: str | None  # the prompt's name, when the file got far enough to have one
    field: str  # path to the field, ``messages[1].content``; empty for the whole file
    severity: Severity
    message: str

    def __str__(self) -> str:
        where = self.file or self.name or "<prompt>"
        at = f" {self.field}:" if self.field else ""
        return f"{where}:{at} {self.severity}: {self.message}"


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A version as the registry holds it: ``content`` is ``content_of`` that version."""

    version: str
    content_hash: str
    content: dict[str, Any] = field(hash=False)


class RegistryView(Protocol):
    """What lint needs from the registry: every pushed version of a prompt."""

    def versions(self, name: str) -> list[StoredVersion]: ...


def lint_dir(
    directory: str | Path,
    registry: RegistryView | None = None,
    *,
    aliases: Collection[str] | None = None,
) -> list[Finding]:
    """Read every prompt under ``directory`` and lint it; unreadable files become findings."""
    sources, problems = read_prompt_dir(Path(directory))
    unreadable = [Finding(p.file, None, p.field, "error", p.message) for p in problems]
    # read_prompt_dir already reported duplicates, so lint each name once.
    seen: set[str] = set()
    unique = []
    for source in sources:
        if source.prompt.name not in seen:
            seen.add(source.prompt.name)
            unique.append(source)
    return unreadable + lint(unique, registry, aliases=aliases)


def lint(
    prompts: Sequence[PromptFile | PromptSource],
    registry: RegistryView | None = None,
    *,
    aliases: Collection[str] | None = None,
) -> list[Finding]:
    """Every finding for ``prompts``; a prompt is clean when none has severity ``error``."""
    linter = _Linter(registry, aliases)
    findings: list[Finding] = []
    first: dict[str, str] = {}
    for item in prompts:
        if isinstance(item, PromptSource):
            prompt, file, path = item.prompt, item.file, item.path
        else:
            prompt, file, path = item, None, None
        if prompt.name in first:
            also = f", also in {first[prompt.name]}" if first[prompt.name] else ""
            message = f"duplicate prompt name {prompt.name!r}{also}"
            findings.append(Finding(file, prompt.name, "name", "error", message))
            continue
        first[prompt.name] = file or ""
        findings += linter.lint_one(prompt, file, path)
    return findings


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


class _Linter:
    def __init__(self, registry: RegistryView | None, aliases: Collection[str] | None) -> None:
        self._env = make_environment()
        self._globals = frozenset(self._env.globals)
        self._registry = registry
        self._aliases = aliases

    def lint_one(self, prompt: PromptFile, file: str | None, path: Path | None) -> list[Finding]:
        found: list[tuple[str, Severity, str]] = []
        if path is not None and path.stem != prompt.name:
            found.append(("name", "warning", f"the file should be named {prompt.name}.yaml"))
        found += self._templates(prompt)
        for name, spec in sorted(prompt.variables.items()):
            found += [(f"variables.{name}.{k}", s, m) for k, s, m in spec_problems(spec)]
        if prompt.output_schema is not None:
            found += _check_output_schema(prompt.output_schema)
        if self._aliases is not None and prompt.model not in self._aliases:
            known = ", ".join(sorted(self._aliases)) or "none"
            found.append(
                ("model", "error", f"unknown model alias {prompt.model!r}; known: {known}")
            )
        if self._registry is not None:
            found += check_versions(prompt, self._registry.versions(prompt.name))
        return [Finding(file, prompt.name, f, s, m) for f, s, m in found]

    def _templates(self, prompt: PromptFile) -> list[tuple[str, Severity, str]]:
        found: list[tuple[str, Severity, str]] = []
        used: set[str] = set()
        for i, message in enumerate(prompt.messages):
            where = f"messages[{i}].content"
            try:
                ast = self._env.parse(message.content)
                self._env.compile(ast)
            except TemplateSyntaxError as exc:
                found.append((where, "error", f"template syntax error, line {exc.lineno}: {exc}"))
                continue
            names = meta.find_undeclared_variables(ast) - self._globals
            used |= names
            for name in sorted(names - prompt.variables.keys()):
                found.append((where, "error", f"uses {name!r}, which is not declared in variables"))
        unused = sorted(prompt.variables.keys() - used)
        # Unused variables matter only once every template has compiled.
        if not any(severity == "error" for _, severity, _ in found):
            for name in unused:
                found.append((f"variables.{name}", "warning", "declared but no template uses it"))
        return found


def _check_output_schema(schema: dict[str, Any]) -> list[tuple[str, Severity, str]]:
    # Imported here: only lint needs it, and the gateway should not pay for it at start.
    from jsonschema import SchemaError  # type: ignore[import-untyped]  # ships no type hints
    from jsonschema.validators import validator_for  # type: ignore[import-untyped]

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        return [(f"output_schema{at}", "error", f"not a valid JSON Schema: {exc.message}")]
    return []


# --- semver discipline ------------------------------------------------------


def check_versions(
    prompt: PromptFile, stored: Sequence[StoredVersion]
) -> list[tuple[str, Severity, str]]:
    """(field, severity, message) for ``prompt`` against the versions already pushed.

    - the same version with the same content: fine (pushing it is a no-op);
    - the same version with different content: error, with the diff;
    - a new version must be greater than the latest pushed one;
    - a breaking change to the variables (see :func:`breaking_changes`) needs
      a greater major version than the latest pushed one.
    """
    local = content_of(prompt)
    local_hash = content_hash(prompt)
    for version in stored:
        if version.version == prompt.version:
            if version.content_hash == local_hash:
                return []
            diff = diff_contents(
                version.content, local, f"{prompt.name} {version.version} (pushed)", "this file"
            )
            message = (
                f"version {prompt.version} was already pushed with different content;"
                f" pushed versions never change, so give this content a new version\n{diff}"
            )
            return [("version", "error", message.rstrip("\n"))]
    if not stored:
        return []
    latest = max(stored, key=lambda v: version_key(v.version))
    if version_key(prompt.version) <= version_key(latest.version):
        message = f"{prompt.version} is not greater than the latest pushed version {latest.version}"
        return [("version", "error", message)]
    breaking = breaking_changes(latest.content, local)
    major = semver(latest.version)[0]
    if breaking and semver(prompt.version)[0] <= major:
        message = (
            f"the variables changed in a breaking way since {latest.version}"
            f" ({'; '.join(breaking)}): bump the major version to {major + 1}.0.0"
        )
        return [("version", "error", message)]
    found: list[tuple[str, Severity, str]] = []
    if semver(prompt.version)[0] <= major:
        for name, change in tightened_constraints(latest.content, local):
            found.append((f"variables.{name}", "warning", f"{change}: callers may now fail"))
    if _without_version(latest.content) == _without_version(local):
        message = f"same content as the pushed {latest.version}; this version changes nothing"
        found.append(("version", "warning", message))
    return found


def _without_version(content: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in content.items() if key != "version"}


def _specs(content: dict[str, Any]) -> dict[str, VariableSpec]:
    specs = {}
    for name, raw in (content.get("variables") or {}).items():
        try:
            specs[name] = VariableSpec.model_validate(raw)
        except ValidationError:
            continue  # a version stored under an older format: compare what still parses
    return specs


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How the variables' contract (``variables_shape``) broke from ``old`` to ``new``.

    Breaking: a variable removed, its type changed, an optional variable made
    required, a new required variable. Contents are ``content_of`` dicts.
    """
    before, after = _specs(old), _specs(new)
    changes = []
    for name, spec in sorted(before.items()):
        if name not in after:
            changes.append(f"{name!r} was removed")
        elif after[name].type != spec.type:
            changes.append(f"{name!r} changed type from {spec.type} to {after[name].type}")
        elif is_required(after[name]) and not is_required(spec):
            changes.append(f"{name!r} became required")
    for name, spec in sorted(after.items()):
        if name not in before and is_required(spec):
            changes.append(f"new required variable {name!r}")
    return changes


def tightened_constraints(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]]:
    """(variable, change) for constraints that now refuse values the old version took.

    Not a change of shape, so not an error; lint warns when the major is not bumped.
    """
    before, after = _specs(old), _specs(new)
    found = []
    for name in sorted(before.keys() & after.keys()):
        a, b = before[name], after[name]
        if a.type != b.type:
            continue
        for key, stricter in (("max_length", _lower), ("maximum", _lower)):
            if stricter(getattr(a, key), getattr(b, key)):
                change = f"{key} tightened from {show(getattr(a, key))} to {show(getattr(b, key))}"
                found.append((name, change))
        for key in ("min_length", "minimum"):
            if _raised(getattr(a, key), getattr(b, key)):
                change = f"{key} tightened from {show(getattr(a, key))} to {show(getattr(b, key))}"
                found.append((name, change))
        if b.enum is not None:
            removed = [v for v in (a.enum or []) if v not in b.enum]
            if a.enum is None or removed:
                what = ", ".join(show(v) for v in removed) if removed else "any value"
                found.append((name, f"enum no longer accepts {what}"))
    return found


def _lower(old: float | None, new: float | None) -> bool:
    """``new`` is a tighter upper bound than ``old`` (``None`` is no bound)."""
    return new is not None and (old is None or new < old)


def _raised(old: float | None, new: float | None) -> bool:
    """``new`` is a tighter lower bound than ``old``."""
    return new is not None and (old is None or new > old)


def diff_contents(a: dict[str, Any], b: dict[str, Any], a_label: str, b_label: str) -> str:
    """A unified diff of two contents as canonical YAML (empty when they are equal)."""
    lines = difflib.unified_diff(
        canonical_yaml(a).splitlines(keepends=True),
        canonical_yaml(b).splitlines(keepends=True),
        fromfile=a_label,
        tofile=b_label,
    )
    return "".join(lines)

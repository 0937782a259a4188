"""Typed rendering: validate variables against the prompt's schema, then fill its templates.

Templates are Jinja2 in an ``ImmutableSandboxedEnvironment``: no filesystem
loader (no ``include``/``import`` of files), no access to private or
internal attributes, no mutation of the variables passed in, and strict
undefined — a name the template reads that is not there fails the render
instead of rendering as an empty string. Autoescape is off (the output is
chat text, not HTML); blocks trim their own newline and leading indentation
(``trim_blocks``, ``lstrip_blocks``); ``None`` renders as an empty string.

Each template text is compiled once and cached by the :class:`Renderer`, so
the request path pays only for validation and rendering. A prompt version's
templates never change, so the cache is, in effect, per prompt version.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from keel.prompts._variables import check_value, default_of, is_required, json_type, normalize
from keel.prompts.errors import PromptRenderFailed, PromptVariablesInvalid, VariableProblem
from keel.prompts.model import PromptFile

PARAM = "prompt.variables"


class _UndefinedValue(UndefinedError):
    """An ``UndefinedError`` that remembers which name, on which object, was missing."""

    def __init__(self, message: str | None = None, *, name: str | None, obj: Any) -> None:
        super().__init__(message)
        self.name = name
        self.obj = obj


class _Undefined(StrictUndefined):
    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[Exception] = UndefinedError,
    ) -> None:
        super().__init__(hint, obj, name)
        if exc is UndefinedError:
            # Keep the name and the object, so the error can say which variable it was.
            self._undefined_exception = functools.partial(  # type: ignore[assignment]  # a factory
                _UndefinedValue, name=name, obj=obj
            )
        else:  # the sandbox's SecurityError, raised when the value is used
            self._undefined_exception = exc  # type: ignore[assignment]  # jinja types it narrower


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def make_environment() -> ImmutableSandboxedEnvironment:
    """The one template environment every prompt is compiled in (lint uses it too)."""
    return ImmutableSandboxedEnvironment(
        undefined=_Undefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=_finalize,
        auto_reload=False,
        cache_size=0,  # no loader, so Jinja's own cache would hold nothing
    )


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    template: Template
    names: frozenset[str]  # top-level names the template reads from its variables


class Renderer:
    """Validates variables and renders prompts, compiling each template text once.

    Safe to share between tasks and threads: compiled templates are immutable,
    and two threads compiling the same text at once only do the work twice.
    """

    def __init__(self, *, max_templates: int = 4096) -> None:
        self._env = make_environment()
        self._globals = frozenset(self._env.globals)
        self._compiled: dict[str, CompiledTemplate] = {}
        self._max_templates = max_templates

    def compile(self, source: str) -> CompiledTemplate:
        """The compiled template for ``source``; raises ``TemplateSyntaxError``."""
        compiled = self._compiled.get(source)
        if compiled is None:
            ast = self._env.parse(source)
            names = frozenset(meta.find_undeclared_variables(ast)) - self._globals
            template = self._env.from_string(ast)
            # A plain dict instead of Jinja's ChainMap: it is copied on every render,
            # and copying the ChainMap costs more than the rest of a short render.
            template.globals = dict(template.globals)
            compiled = CompiledTemplate(template, names)
            if len(self._compiled) >= self._max_templates:
                self._compiled.pop(next(iter(self._compiled)), None)  # oldest first
            self._compiled[source] = compiled
        return compiled

    def validate(self, prompt: PromptFile, variables: Mapping[str, Any]) -> dict[str, Any]:
        return validate_variables(prompt, variables)

    def render(self, prompt: PromptFile, variables: Mapping[str, Any]) -> list[dict[str, str]]:
        """Validate ``variables``, then render every message to an OpenAI chat message."""
        values = validate_variables(prompt, variables)
        messages = []
        for i, message in enumerate(prompt.messages):
            where = f"messages[{i}]"
            compiled = self._compile_for(prompt, where, message.content)
            undeclared = compiled.names.difference(values)
            if undeclared:
                name = sorted(undeclared)[0]
                raise PromptRenderFailed(
                    f"{PARAM}.{name}: {where} of prompt {_label(prompt)} uses {name!r},"
                    " which the prompt does not declare (see `keel prompts lint`)",
                    param=f"{PARAM}.{name}",
                )
            try:
                content = compiled.template.render(values)
            except _UndefinedValue as exc:
                raise _undefined(exc, values, where) from None
            except SecurityError as exc:
                raise PromptRenderFailed(
                    f"{where}.content: the template did something the sandbox forbids: {exc}",
                    param=f"prompt.{where}.content",
                ) from None
            except Exception as exc:  # a template can fail in any way
                raise PromptRenderFailed(
                    f"{where}.content: the template failed: {type(exc).__name__}: {exc}",
                    param=f"prompt.{where}.content",
                ) from None
            messages.append({"role": message.role, "content": content})
        return messages

    def _compile_for(self, prompt: PromptFile, where: str, source: str) -> CompiledTemplate:
        try:
            return self.compile(source)
        except TemplateSyntaxError as exc:
            raise PromptRenderFailed(
                f"{where}.content: template syntax error at line {exc.lineno} of prompt"
                f" {_label(prompt)}: {exc.message}",
                param=f"prompt.{where}.content",
            ) from None


@functools.cache
def default_renderer() -> Renderer:
    """The process's shared renderer (created on first use, never at import)."""
    return Renderer()


def render(prompt: PromptFile, variables: Mapping[str, Any]) -> list[dict[str, str]]:
    """Validate ``variables`` against ``prompt`` and render its messages.

    Raises ``PromptVariablesInvalid`` (422) naming the variable and what was
    expected, or ``PromptRenderFailed`` (422) when the template itself fails.
    """
    return default_renderer().render(prompt, variables)


def validate_variables(prompt: PromptFile, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The variables to render with: checked against the schema, defaults filled in.

    Every declared variable is in the result; an optional one that was not
    given (or given as ``null``) has its default, or ``None``. Unknown names
    are an error. Raises ``PromptVariablesInvalid`` listing every problem.
    """
    if not isinstance(variables, Mapping):
        problem = VariableProblem(
            PARAM, f"expected an object of variable names to values, got {json_type(variables)}"
        )
        raise PromptVariablesInvalid([problem])
    specs = prompt.variables
    values: dict[str, Any] = {}
    problems: list[VariableProblem] = []
    for name, spec in specs.items():
        value = variables.get(name)
        if value is None:
            if is_required(spec):
                got = "it is missing" if name not in variables else "got null"
                message = f"required variable: expected {_a(spec.type)}, {got}"
                problems.append(VariableProblem(f"{PARAM}.{name}", message))
            values[name] = default_of(spec)
            continue
        problem = check_value(spec, value)
        if problem is not None:
            problems.append(VariableProblem(f"{PARAM}.{name}", problem))
        values[name] = normalize(value)
    if not specs.keys() >= variables.keys():
        declared = ", ".join(sorted(specs)) or "none"
        for name in variables:
            if name not in specs:
                message = f"unknown variable; prompt {_label(prompt)} takes: {declared}"
                problems.append(VariableProblem(f"{PARAM}.{name}", message))
    if problems:
        raise PromptVariablesInvalid(problems)
    return values


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _label(prompt: PromptFile) -> str:
    return f"{prompt.name} {prompt.version}"


def _undefined(
    exc: _UndefinedValue, values: dict[str, Any], where: str
) -> PromptRenderFailed | PromptVariablesInvalid:
    """The error for a name or attribute a template read that the variables lack."""
    if exc.obj is missing:  # a top-level name: validation makes this rare
        param = f"{PARAM}.{exc.name}"
        return PromptRenderFailed(f"{param}: is undefined in {where}", param=param)
    path = _find(exc.obj, values)
    param = f"{PARAM}.{path}" if path else PARAM
    detail = exc.message or f"{exc.name!r} is undefined"
    return PromptVariablesInvalid([VariableProblem(param, f"{detail} (read by {where})")])


def _find(target: Any, values: Mapping[str, Any], depth: int = 4) -> str | None:
    """The path (``docs[0]``) of the very object ``target`` inside the variables."""
    for name, value in values.items():
        if value is target:
            return name
    if depth == 0:
        return None
    for name, value in values.items():
        inner: Mapping[str, Any] | None = None
        if isinstance(value, list):
            inner = {f"[{i}]": item for i, item in enumerate(value)}
        elif isinstance(value, Mapping):
            inner = {f".{key}": item for key, item in value.items()}
        if inner:
            found = _find(target, inner, depth - 1)
            if found is not None:
                return f"{name}{found}"
    return None

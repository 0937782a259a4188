"""Scorers on the answer as JSON: json_valid and json_schema."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from keel.evals.base import Score, Scorer, ScoringCase
from keel.evals.scorers._base import (
    ScorerConfigError,
    ScorerOptions,
    Threshold,
    cut,
    parse_options,
)
from keel.evals.scorers._registry import register

# One fenced block around the whole answer: ```json\n{...}\n```
_FENCE = re.compile(r"\A\s*```[\w-]*[ \t]*\n(.*?)\n?```\s*\Z", re.DOTALL)


def parse_answer(text: str, *, strip_code_fence: bool) -> tuple[Any, str | None]:
    """(value, None) when ``text`` is JSON, else (None, why not)."""
    if strip_code_fence:
        match = _FENCE.match(text)
        if match:
            text = match.group(1)
    try:
        return json.loads(text), None
    except ValueError as exc:
        return None, f"not JSON: {exc}"


class JsonValidOptions(ScorerOptions):
    threshold: Threshold = 1.0
    strip_code_fence: bool = False


class JsonValidScorer:
    """1 when the answer parses as JSON, else 0."""

    def __init__(self, opts: JsonValidOptions) -> None:
        self.name = opts.name or "json_valid"
        self.opts = opts

    async def score(self, case: ScoringCase) -> Score:
        _, problem = parse_answer(case.output.text, strip_code_fence=self.opts.strip_code_fence)
        value = 0.0 if problem else 1.0
        return Score(value, value >= self.opts.threshold, problem)


@register("json_valid")
def json_valid(options: Mapping[str, Any]) -> Scorer:
    return JsonValidScorer(parse_options(JsonValidOptions, options))


class JsonSchemaOptions(ScorerOptions):
    threshold: Threshold = 1.0
    schema_: dict[str, Any] = Field(alias="schema")
    strip_code_fence: bool = False


class JsonSchemaScorer:
    """1 when the answer is JSON valid against ``schema``, else 0 (the first error as detail)."""

    def __init__(self, name: str, schema: Mapping[str, Any], opts: JsonSchemaOptions) -> None:
        # Slow to import, so loaded by the first json_schema scorer built.
        from jsonschema import exceptions, validators  # type: ignore[import-untyped]  # no hints

        cls = validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except exceptions.SchemaError as exc:
            raise ScorerConfigError(
                [("schema", f"not a valid JSON Schema: {exc.message}")]
            ) from None
        self.name = name
        self.opts = opts
        self.validator: Any = cls(schema)

    async def score(self, case: ScoringCase) -> Score:
        instance, problem = parse_answer(
            case.output.text, strip_code_fence=self.opts.strip_code_fence
        )
        if problem is None:
            errors = sorted(self.validator.iter_errors(instance), key=lambda e: str(e.json_path))
            if errors:
                where = errors[0].json_path
                problem = f"{where}: {errors[0].message}"
                if len(errors) > 1:
                    problem += f" (and {len(errors) - 1} more)"
        value = 0.0 if problem else 1.0
        return Score(value, value >= self.opts.threshold, problem and cut(problem))


@register("json_schema")
def json_schema(options: Mapping[str, Any]) -> Scorer:
    opts = parse_options(JsonSchemaOptions, options)
    return JsonSchemaScorer(opts.name or "json_schema", opts.schema_, opts)

"""Scorers on the answer's text: exact, contains / icontains, regex, numeric."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from keel.evals.base import Score, Scorer, ScoringCase
from keel.evals.scorers._base import (
    ScorerConfigError,
    ScorerOptions,
    ScoringError,
    Threshold,
    expected_texts,
    parse_options,
    shown,
)
from keel.evals.scorers._registry import register

_SPACES = re.compile(r"\s+")


# --- exact --------------------------------------------------------------------------


class ExactOptions(ScorerOptions):
    threshold: Threshold = 1.0
    strip: bool = True
    ignore_case: bool = False
    normalize_whitespace: bool = False


class ExactScorer:
    """1 when the answer equals ``expected`` (any of a list of strings), else 0.

    A non-string ``expected`` (a number, an object) is compared as JSON: the
    answer is parsed and compared by value.
    """

    def __init__(self, opts: ExactOptions) -> None:
        self.name = opts.name or "exact"
        self.opts = opts

    def _norm(self, text: str) -> str:
        if self.opts.normalize_whitespace:
            text = _SPACES.sub(" ", text).strip()
        elif self.opts.strip:
            text = text.strip()
        return text.casefold() if self.opts.ignore_case else text

    async def score(self, case: ScoringCase) -> Score:
        expected = case.example.expected
        text = case.output.text
        if expected is not None and not _is_texts(expected):
            ok = _json_equal(_parse_json(text), expected)
        else:
            wanted = expected_texts(case.example)
            ok = self._norm(text) in {self._norm(w) for w in wanted}
            expected = wanted[0] if len(wanted) == 1 else wanted
        value = 1.0 if ok else 0.0
        detail = None if ok else f"expected {shown(expected)}, got {shown(text)}"
        return Score(value, value >= self.opts.threshold, detail)


@register("exact")
def exact(options: Mapping[str, Any]) -> Scorer:
    return ExactScorer(parse_options(ExactOptions, options))


def _is_texts(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
    )


_NOT_JSON = object()


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _NOT_JSON


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1 and "1" is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


# --- contains / icontains ----------------------------------------------------------


class ContainsOptions(ScorerOptions):
    threshold: Threshold = 1.0
    mode: Literal["all", "any"] = "all"
    substrings: list[str] | None = Field(default=None, min_length=1)

    @field_validator("substrings", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ContainsScorer:
    """``all``: the share of substrings found; ``any``: 1 if one is found, else 0."""

    def __init__(self, opts: ContainsOptions, *, kind: str, ignore_case: bool) -> None:
        self.name = opts.name or kind
        self.opts = opts
        self.ignore_case = ignore_case

    async def score(self, case: ScoringCase) -> Score:
        wanted = self.opts.substrings or expected_texts(case.example)
        text = case.output.text.casefold() if self.ignore_case else case.output.text
        found = [(w.casefold() if self.ignore_case else w) in text for w in wanted]
        missing = [w for w, hit in zip(wanted, found, strict=True) if not hit]
        if self.opts.mode == "any":
            value = 1.0 if any(found) else 0.0
            detail = None if value else f"none of {shown(wanted)} found"
        else:
            value = sum(found) / len(found)
            detail = f"missing {shown(missing)}" if missing else None
        return Score(value, value >= self.opts.threshold, detail)


@register("contains")
def contains(options: Mapping[str, Any]) -> Scorer:
    return ContainsScorer(
        parse_options(ContainsOptions, options), kind="contains", ignore_case=False
    )


@register("icontains")
def icontains(options: Mapping[str, Any]) -> Scorer:
    return ContainsScorer(
        parse_options(ContainsOptions, options), kind="icontains", ignore_case=True
    )


# --- regex --------------------------------------------------------------------------


class RegexOptions(ScorerOptions):
    threshold: Threshold = 1.0
    pattern: str | None = None
    ignore_case: bool = False
    full_match: bool = False


class RegexScorer:
    """1 when the pattern matches the answer (``re.search``, or ``fullmatch``), else 0."""

    def __init__(self, opts: RegexOptions) -> None:
        self.name = opts.name or "regex"
        self.opts = opts
        self.flags = re.IGNORECASE if opts.ignore_case else 0
        self.pattern: re.Pattern[str] | None = None
        if opts.pattern is not None:
            try:
                self.pattern = re.compile(opts.pattern, self.flags)
            except re.error as exc:
                raise ScorerConfigError([("pattern", f"not a valid regex: {exc}")]) from None

    def _pattern(self, case: ScoringCase) -> re.Pattern[str]:
        if self.pattern is not None:
            return self.pattern
        expected = case.example.expected
        if not isinstance(expected, str):
            raise ScoringError(
                f"example {case.example.id!r}: regex needs a pattern option or a string expected",
                param="expected",
            )
        try:
            return re.compile(expected, self.flags)
        except re.error as exc:
            raise ScoringError(
                f"example {case.example.id!r}: expected is not a valid regex: {exc}",
                param="expected",
            ) from None

    async def score(self, case: ScoringCase) -> Score:
        pattern = self._pattern(case)
        text = case.output.text
        match = pattern.fullmatch(text) if self.opts.full_match else pattern.search(text)
        value = 1.0 if match else 0.0
        detail = None if match else f"/{pattern.pattern}/ does not match {shown(text)}"
        return Score(value, value >= self.opts.threshold, detail)


@register("regex")
def regex(options: Mapping[str, Any]) -> Scorer:
    return RegexScorer(parse_options(RegexOptions, options))


# --- numeric ------------------------------------------------------------------------

# Thousands groups ("1,234.5") first, so they are not read as "1".
_NUMBER = re.compile(
    r"[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
)


def first_number(text: str) -> float | None:
    """The first number written in ``text`` (``-1.5e3``, ``1,234.5``), or None."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    return float(match.group().replace(",", ""))


class NumericOptions(ScorerOptions):
    threshold: Threshold = 1.0
    abs_tol: float = Field(default=0.0, ge=0.0)
    rel_tol: float = Field(default=0.0, ge=0.0)


class NumericScorer:
    """1 when the first number in the answer is within tolerance of ``expected``, else 0.

    Tolerance is ``max(abs_tol, rel_tol * |expected|)``; 0 means equal.
    """

    def __init__(self, opts: NumericOptions) -> None:
        self.name = opts.name or "numeric"
        self.opts = opts

    async def score(self, case: ScoringCase) -> Score:
        target = _expected_number(case)
        got = first_number(case.output.text)
        if got is None:
            return Score(0.0, False, f"no number in {shown(case.output.text)}")
        tolerance = max(self.opts.abs_tol, self.opts.rel_tol * abs(target))
        diff = abs(got - target)
        ok = diff <= tolerance
        value = 1.0 if ok else 0.0
        detail = None if ok else f"expected {target:g}, got {got:g} (off by {diff:g})"
        return Score(value, value >= self.opts.threshold, detail)


def _expected_number(case: ScoringCase) -> float:
    example = case.example
    for value in (example.expected, example.reference):
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
        elif isinstance(value, str):
            number = first_number(value)
            if number is not None:
                return number
    raise ScoringError(
        f"example {example.id!r}: numeric needs a number in expected or reference",
        param="expected",
    )


@register("numeric")
def numeric(options: Mapping[str, Any]) -> Scorer:
    return NumericScorer(parse_options(NumericOptions, options))

"""Scorers that grade closeness to a reference: levenshtein, rouge_l, bleu, embedding_similarity.

Each compares the answer with ``reference`` (or, without one, a string
``expected``); with a list of strings in ``expected``, the best match counts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from keel.evals.base import Score, Scorer, ScoringCase
from keel.evals.scorers import _metrics
from keel.evals.scorers._base import (
    ScorerOptions,
    ScoringError,
    Threshold,
    expected_texts,
    parse_options,
)
from keel.evals.scorers._registry import register

_SPACES = re.compile(r"\s+")


def _references(case: ScoringCase) -> list[str]:
    return expected_texts(case.example, prefer="reference")


def _result(value: float, threshold: float, label: str) -> Score:
    value = min(1.0, max(0.0, value))
    detail = None if value >= threshold else f"{label} {value:.3f} < {threshold:g}"
    return Score(value, value >= threshold, detail)


# --- levenshtein --------------------------------------------------------------------


class LevenshteinOptions(ScorerOptions):
    threshold: Threshold = 0.8
    ignore_case: bool = False
    normalize_whitespace: bool = True


class LevenshteinScorer:
    """1 - edit distance / length of the longer text (1: identical, 0: nothing in common)."""

    def __init__(self, opts: LevenshteinOptions) -> None:
        self.name = opts.name or "levenshtein"
        self.opts = opts

    def _norm(self, text: str) -> str:
        if self.opts.normalize_whitespace:
            text = _SPACES.sub(" ", text).strip()
        return text.casefold() if self.opts.ignore_case else text

    async def score(self, case: ScoringCase) -> Score:
        from rapidfuzz.distance import Levenshtein  # a compiled extension: loaded on first use

        text = self._norm(case.output.text)
        value = max(
            Levenshtein.normalized_similarity(text, self._norm(ref)) for ref in _references(case)
        )
        return _result(value, self.opts.threshold, "similarity")


@register("levenshtein")
def levenshtein(options: Mapping[str, Any]) -> Scorer:
    return LevenshteinScorer(parse_options(LevenshteinOptions, options))


# --- rouge_l ------------------------------------------------------------------------


class RougeLOptions(ScorerOptions):
    threshold: Threshold = 0.5
    lowercase: bool = True


class RougeLScorer:
    """ROUGE-L F1 over word tokens: the longest common subsequence against both lengths."""

    def __init__(self, opts: RougeLOptions) -> None:
        self.name = opts.name or "rouge_l"
        self.opts = opts

    async def score(self, case: ScoringCase) -> Score:
        tokens = _metrics.words(case.output.text, lowercase=self.opts.lowercase)
        value = max(
            _metrics.rouge_l(tokens, _metrics.words(ref, lowercase=self.opts.lowercase))
            for ref in _references(case)
        )
        return _result(value, self.opts.threshold, "ROUGE-L")


@register("rouge_l")
def rouge_l(options: Mapping[str, Any]) -> Scorer:
    return RougeLScorer(parse_options(RougeLOptions, options))


# --- bleu ---------------------------------------------------------------------------


class BleuOptions(ScorerOptions):
    threshold: Threshold = 0.3
    max_order: int = Field(default=4, ge=1, le=8)
    epsilon: float = Field(default=0.1, gt=0.0, le=1.0)
    lowercase: bool = False


class BleuScorer:
    """Sentence BLEU with smoothing method 1; every reference counts (clipping, lengths)."""

    def __init__(self, opts: BleuOptions) -> None:
        self.name = opts.name or "bleu"
        self.opts = opts

    async def score(self, case: ScoringCase) -> Score:
        lower = self.opts.lowercase
        value = _metrics.sentence_bleu(
            _metrics.words_and_punctuation(case.output.text, lowercase=lower),
            [_metrics.words_and_punctuation(r, lowercase=lower) for r in _references(case)],
            max_order=self.opts.max_order,
            epsilon=self.opts.epsilon,
        )
        return _result(value, self.opts.threshold, "BLEU")


@register("bleu")
def bleu(options: Mapping[str, Any]) -> Scorer:
    return BleuScorer(parse_options(BleuOptions, options))


# --- embedding_similarity -----------------------------------------------------------


class EmbeddingOptions(ScorerOptions):
    threshold: Threshold = 0.8
    alias: str = Field(min_length=1)


class EmbeddingScorer:
    """Cosine similarity of the answer's and the reference's embeddings, floored at 0.

    The embeddings come from ``alias`` through the gateway, so they are traced
    and costed like any call.
    """

    def __init__(self, opts: EmbeddingOptions) -> None:
        self.name = opts.name or "embedding_similarity"
        self.opts = opts

    async def score(self, case: ScoringCase) -> Score:
        references = _references(case)
        vectors = await case.gateway.embed(self.opts.alias, [case.output.text, *references])
        if len(vectors) != len(references) + 1:
            raise ScoringError(
                f"{self.opts.alias}: asked for {len(references) + 1} embeddings, got {len(vectors)}"
            )
        answer, *others = vectors
        try:
            similarities = [_metrics.cosine(answer, other) for other in others]
        except ValueError as exc:
            raise ScoringError(f"{self.opts.alias}: {exc}") from None
        known = [s for s in similarities if s is not None]
        if not known:
            return Score(0.0, False, "an embedding is all zeros")
        return _result(max(known), self.opts.threshold, "cosine")


@register("embedding_similarity")
def embedding_similarity(options: Mapping[str, Any]) -> Scorer:
    return EmbeddingScorer(parse_options(EmbeddingOptions, options))

"""Text-similarity arithmetic, pure and dependency-free: tokens, ROUGE-L, BLEU, cosine.

ROUGE-L and BLEU are a few dozen lines each; implementing them here (and
testing them on hand-computed values) spares every install sacrebleu's
numpy, lxml, regex and portalocker, and rouge-score's nltk and absl.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORDS = re.compile(r"\w+")
_WORDS_AND_PUNCTUATION = re.compile(r"\w+|[^\w\s]")


def words(text: str, *, lowercase: bool) -> list[str]:
    """Runs of letters and digits; punctuation dropped (ROUGE's usual tokens)."""
    return _WORDS.findall(text.lower() if lowercase else text)


def words_and_punctuation(text: str, *, lowercase: bool) -> list[str]:
    """Words, and each punctuation mark as its own token (close to BLEU's 13a tokens)."""
    return _WORDS_AND_PUNCTUATION.findall(text.lower() if lowercase else text)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, in O(len(a) * len(b)) time, O(len(b)) space."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F1 (Lin, 2004): P = LCS/|candidate|, R = LCS/|reference|, F = 2PR/(P+R).

    Two empty texts agree (1.0); one empty text scores 0.
    """
    if not candidate and not reference:
        return 1.0
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    precision = lcs / len(candidate)
    recall = lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(
    candidate: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    max_order: int = 4,
    epsilon: float = 0.1,
) -> float:
    """Sentence BLEU (Papineni et al., 2002) with Chen & Cherry's smoothing method 1.

    Modified n-gram precisions p_1..p_N (counts clipped by the most any one
    reference has), their geometric mean with uniform weights, times the
    brevity penalty exp(1 - r/c) when the candidate (c tokens) is not longer
    than the closest reference length r. Smoothing 1: a precision with no
    match is epsilon / (number of candidate n-grams, at least 1). As in NLTK,
    a candidate with no unigram match scores 0.
    """
    if not candidate or not references:
        return 0.0
    log_sum = 0.0
    for n in range(1, max_order + 1):
        counts = _ngrams(candidate, n)
        most: Counter[tuple[str, ...]] = Counter()
        for reference in references:
            most |= _ngrams(reference, n)  # element-wise max
        matches = sum(min(count, most[gram]) for gram, count in counts.items())
        total = max(1, len(candidate) - n + 1)
        if matches == 0 and n == 1:
            return 0.0
        log_sum += math.log((matches or epsilon) / total) / max_order
    c = len(candidate)
    r = min((len(ref) for ref in references), key=lambda length: (abs(length - c), length))
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(log_sum)


def cosine(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cosine similarity of two vectors; None when either has zero length."""
    if len(a) != len(b):
        raise ValueError(f"vectors of different sizes: {len(a)} and {len(b)}")
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norm == 0.0:
        return None
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm

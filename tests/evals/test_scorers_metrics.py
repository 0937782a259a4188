"""ROUGE-L, BLEU and cosine against values computed by hand."""

from __future__ import annotations

import math

import pytest

from keel.evals.scorers._metrics import (
    cosine,
    lcs_length,
    rouge_l,
    sentence_bleu,
    words,
    words_and_punctuation,
)


def t(text: str) -> list[str]:
    return text.split()


def test_tokens() -> None:
    assert words("The cat, the HAT!", lowercase=True) == ["the", "cat", "the", "hat"]
    assert words_and_punctuation("Hi, you.", lowercase=False) == ["Hi", ",", "you", "."]


@pytest.mark.parametrize(
    ("a", "b", "length"),
    [
        ("", "abc", 0),
        ("abc", "abc", 3),
        ("abcbdab", "bdcaba", 4),  # CLRS: "bcba"
        ("axbycz", "abc", 3),
        ("abc", "xyz", 0),
    ],
)
def test_lcs_length(a: str, b: str, length: int) -> None:
    assert lcs_length(list(a), list(b)) == length
    assert lcs_length(list(b), list(a)) == length


def test_rouge_l_by_hand() -> None:
    # Lin (2004): "police killed the gunman" vs "police kill the gunman": LCS 3 of 4 each.
    assert rouge_l(
        words("police killed the gunman", lowercase=True),
        words("police kill the gunman", lowercase=True),
    ) == pytest.approx(0.75)
    # LCS of "a b c d" and "a c" is 2: P = 2/4, R = 2/2, F = 2 * 0.5 * 1 / 1.5 = 2/3.
    assert rouge_l(["a", "b", "c", "d"], ["a", "c"]) == pytest.approx(2 / 3)
    # "the cat sat on the mat" / "the cat is on the mat": LCS 5, P = R = 5/6.
    assert rouge_l(t("the cat sat on the mat"), t("the cat is on the mat")) == (
        pytest.approx(5 / 6)
    )
    assert rouge_l([], []) == 1.0
    assert rouge_l(["a"], []) == 0.0
    assert rouge_l(["a"], ["b"]) == 0.0


def test_bleu_by_hand() -> None:
    candidate = t("the cat sat on the mat")
    reference = t("the cat is on the mat")
    # p1 = 5/6, p2 = 3/5 (the cat, on the, the mat), p3 = 1/4 (on the mat),
    # p4 = 0 matches -> smoothed 0.1/3; c = r = 6 so BP = 1.
    # BLEU = (5/6 * 3/5 * 1/4 * 1/30) ** (1/4) = (1/240) ** (1/4) = 0.2541
    assert sentence_bleu(candidate, [reference]) == pytest.approx((1 / 240) ** 0.25)
    assert sentence_bleu(candidate, [reference]) == pytest.approx(0.25407, abs=1e-5)


def test_bleu_brevity_penalty_by_hand() -> None:
    # "the cat" vs a 6-token reference: p1 = 2/2, p2 = 1/1, p3 and p4 have no
    # candidate n-grams -> 0.1/1 each; BP = exp(1 - 6/2) = e^-2.
    expected = math.exp(-2) * (1 * 1 * 0.1 * 0.1) ** 0.25
    assert sentence_bleu(["the", "cat"], [t("the cat sat on the mat")]) == pytest.approx(expected)
    assert expected == pytest.approx(0.042797, abs=1e-6)


def test_bleu_edges() -> None:
    assert sentence_bleu(t("a b c d"), [t("a b c d")]) == pytest.approx(1.0)
    assert sentence_bleu(["x", "y"], [["a", "b"]]) == 0.0  # no unigram match
    assert sentence_bleu([], [["a"]]) == 0.0
    # Clipping: "the the the" has 1 "the" to match in the reference.
    # p1 = 1/3, p2 = p3 = 0 -> 0.1/2, 0.1/1; BP = exp(1 - 3/3) = 1.
    got = sentence_bleu(["the"] * 3, [["the", "cat", "sat"]], max_order=3)
    assert got == pytest.approx((1 / 3 * 0.05 * 0.1) ** (1 / 3))


def test_bleu_several_references_clip_by_the_most_and_use_the_closest_length() -> None:
    candidate = t("the the cat")
    refs = [["the", "cat"], ["the", "the", "dog", "sat", "down"]]
    # p1: "the" x2 allowed by ref 2, "cat" by ref 1 -> 3/3; p2: "the the" (ref 2), "the cat"
    # (ref 1) -> 2/2. Lengths 2 and 5: closest to 3 is 2 (|1| < |2|), c > r so BP = 1.
    assert sentence_bleu(candidate, refs, max_order=2) == pytest.approx(1.0)


def test_cosine() -> None:
    assert cosine([1, 0], [3, 4]) == pytest.approx(0.6)
    assert cosine([1, 2], [-1, -2]) == pytest.approx(-1.0)
    assert cosine([0, 0], [1, 1]) is None
    with pytest.raises(ValueError, match="different sizes"):
        cosine([1], [1, 2])

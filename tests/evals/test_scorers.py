"""Every built-in scorer on known cases, built from specs the way a suite builds them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from keel.evals.base import CallResult, Example, Score, ScoringCase
from keel.evals.scorers import ScoringError, build


class FakeGateway:
    """The ``GatewayClient`` seam: embeddings from a fixed table, no chat."""

    def __init__(self, vectors: Mapping[str, list[float]]) -> None:
        self.vectors = vectors
        self.calls: list[tuple[str, list[str]]] = []

    async def chat(self, body: Mapping[str, Any]) -> CallResult:
        raise AssertionError("scorers under test make no chat calls")

    async def embed(self, alias: str, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append((alias, list(texts)))
        return [self.vectors[text] for text in texts]


def make_case(
    text: str,
    *,
    expected: Any = None,
    reference: str | None = None,
    latency_ms: float = 100.0,
    cost_usd: float | None = 0.001,
    gateway: FakeGateway | None = None,
) -> ScoringCase:
    example = Example(id="ex-1", expected=expected, reference=reference)
    output = CallResult(
        text=text,
        response={},
        latency_ms=latency_ms,
        cost_usd=cost_usd,
        input_tokens=10,
        output_tokens=5,
    )
    return ScoringCase(example=example, output=output, gateway=gateway or FakeGateway({}))


async def score(spec: Mapping[str, Any], case: ScoringCase) -> Score:
    return await build(spec).score(case)


# --- exact --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "text", "expected", "value"),
    [
        ({}, "Paris", "Paris", 1.0),
        ({}, "  Paris\n", "Paris", 1.0),  # ends stripped by default
        ({"strip": False}, "Paris\n", "Paris", 0.0),
        ({}, "paris", "Paris", 0.0),
        ({"ignore_case": True}, "PARIS", "paris", 1.0),
        ({}, "New  York", "New York", 0.0),
        ({"normalize_whitespace": True}, " New \n York ", "New York", 1.0),
        ({}, "Lyon", ["Paris", "Lyon"], 1.0),  # any of a list of accepted answers
        ({}, "42", 42, 1.0),  # non-string expected: compared as JSON values
        ({}, "42.0", 42, 1.0),
        ({}, "true", 1, 0.0),  # a boolean is not a number
        ({}, '{"b": [1, 2], "a": "x"}', {"a": "x", "b": [1, 2]}, 1.0),
        ({}, '{"a": "y"}', {"a": "x"}, 0.0),
        ({}, "not json", {"a": "x"}, 0.0),
    ],
)
async def test_exact(spec: dict[str, Any], text: str, expected: Any, value: float) -> None:
    result = await score({"type": "exact", **spec}, make_case(text, expected=expected))
    assert result.value == value
    assert result.passed is (value == 1.0)
    assert (result.detail is None) is (value == 1.0)


async def test_exact_falls_back_to_reference_and_names_the_miss() -> None:
    result = await score({"type": "exact"}, make_case("Lille", reference="Paris"))
    assert result == Score(0.0, False, "expected 'Paris', got 'Lille'")


async def test_a_scorer_without_anything_to_compare_raises() -> None:
    with pytest.raises(ScoringError, match=r"ex-1.*neither expected nor reference"):
        await score({"type": "exact"}, make_case("Paris"))


# --- contains / icontains -----------------------------------------------------------


async def test_contains_all_is_the_share_found() -> None:
    case = make_case("The capital is Paris.", expected=["capital", "Paris", "France"])
    result = await score({"type": "contains"}, case)
    assert result.value == pytest.approx(2 / 3)
    assert not result.passed
    assert result.detail == "missing ['France']"
    assert (await score({"type": "contains", "threshold": 0.6}, case)).passed


async def test_contains_any_and_case() -> None:
    case = make_case("The capital is PARIS.", expected=["paris", "lyon"])
    assert (await score({"type": "contains", "mode": "any"}, case)).value == 0.0
    assert (await score({"type": "icontains", "mode": "any"}, case)).value == 1.0
    assert (await score({"type": "icontains"}, case)).value == 0.5


async def test_contains_a_fixed_substring_option_overrides_expected() -> None:
    case = make_case("Sources: [1]", expected="unused")
    result = await score({"type": "contains", "substrings": "Sources:"}, case)
    assert result == Score(1.0, True, None)


# --- regex --------------------------------------------------------------------------


async def test_regex_from_option_or_expected() -> None:
    assert (await score({"type": "regex", "pattern": r"\d{3}"}, make_case("code 123"))).passed
    full = {"type": "regex", "pattern": r"\d{3}", "full_match": True}
    assert not (await score(full, make_case("code 123"))).passed
    assert (await score({"type": "regex"}, make_case("ERROR: x", expected="^error"))).value == 0
    insensitive = {"type": "regex", "ignore_case": True}
    assert (await score(insensitive, make_case("ERROR: x", expected="^error"))).value == 1


async def test_regex_bad_expected_pattern_is_a_scoring_error() -> None:
    with pytest.raises(ScoringError, match="not a valid regex"):
        await score({"type": "regex"}, make_case("x", expected="(unclosed"))


# --- json_valid / json_schema -------------------------------------------------------


async def test_json_valid() -> None:
    assert (await score({"type": "json_valid"}, make_case('{"a": 1}'))).value == 1.0
    bad = await score({"type": "json_valid"}, make_case("{'a': 1}"))
    assert bad.value == 0.0
    assert bad.detail is not None
    assert bad.detail.startswith("not JSON:")
    fenced = make_case('```json\n{"a": 1}\n```')
    assert (await score({"type": "json_valid"}, fenced)).value == 0.0
    assert (await score({"type": "json_valid", "strip_code_fence": True}, fenced)).value == 1.0


SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["pos", "neg"]}, "score": {"type": "number"}},
    "required": ["label"],
}


async def test_json_schema() -> None:
    spec = {"type": "json_schema", "schema": SCHEMA}
    assert (await score(spec, make_case('{"label": "pos", "score": 0.9}'))).passed
    wrong = await score(spec, make_case('{"label": "meh", "score": "high"}'))
    assert wrong.value == 0.0
    assert wrong.detail == "$.label: 'meh' is not one of ['pos', 'neg'] (and 1 more)"
    missing = await score(spec, make_case("{}"))
    assert missing.detail == "$: 'label' is a required property"
    not_json = await score(spec, make_case("label: pos"))
    assert not_json.detail is not None
    assert not_json.detail.startswith("not JSON")


# --- numeric ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "text", "expected", "value"),
    [
        ({}, "The answer is 42.", 42, 1.0),
        ({}, "The answer is 42.5", 42, 0.0),
        ({"abs_tol": 0.5}, "about 42.5 units", 42, 1.0),
        ({"rel_tol": 0.01}, "-101", -100, 1.0),  # tolerance 1% of |-100| = 1
        ({"rel_tol": 0.01}, "-102", -100, 0.0),
        ({}, "Total: 1,234.50 USD", "1234.5", 1.0),  # thousands groups, expected as text
        ({}, "1.5e3", 1500, 1.0),
        ({}, "x = .5", 0.5, 1.0),
    ],
)
async def test_numeric(spec: dict[str, Any], text: str, expected: Any, value: float) -> None:
    result = await score({"type": "numeric", **spec}, make_case(text, expected=expected))
    assert result.value == value


async def test_numeric_without_a_number_in_the_output_fails() -> None:
    result = await score({"type": "numeric"}, make_case("no idea", expected=3))
    assert result == Score(0.0, False, "no number in 'no idea'")


async def test_numeric_needs_a_number_to_compare_with() -> None:
    with pytest.raises(ScoringError, match="needs a number"):
        await score({"type": "numeric"}, make_case("3", expected=True))


# --- levenshtein --------------------------------------------------------------------


async def test_levenshtein_is_one_minus_distance_over_longer_length() -> None:
    # kitten -> sitting: 3 edits, longer length 7.
    result = await score({"type": "levenshtein"}, make_case("kitten", reference="sitting"))
    assert result.value == pytest.approx(1 - 3 / 7)
    assert not result.passed  # default threshold 0.8
    assert result.detail == "similarity 0.571 < 0.8"
    loose = {"type": "levenshtein", "threshold": 0.5}
    assert (await score(loose, make_case("kitten", reference="sitting"))).passed
    same = {"type": "levenshtein", "ignore_case": True}
    assert (await score(same, make_case(" Hello  World ", reference="hello world"))).value == 1.0


async def test_levenshtein_takes_the_best_of_several_expected_answers() -> None:
    case = make_case("color", expected=["colour", "color"])
    assert (await score({"type": "levenshtein"}, case)).value == 1.0


# --- rouge_l and bleu (metrics are checked by hand in test_scorers_metrics.py) -----


async def test_rouge_l_scorer() -> None:
    case = make_case("The cat sat on the mat.", reference="the cat is on the mat")
    result = await score({"type": "rouge_l"}, case)
    assert result.value == pytest.approx(5 / 6)  # LCS "the cat on the mat": P = R = 5/6
    assert result.passed


async def test_bleu_scorer() -> None:
    case = make_case("the cat sat on the mat", reference="the cat is on the mat")
    result = await score({"type": "bleu"}, case)
    assert result.value == pytest.approx((1 / 240) ** 0.25)
    assert not result.passed  # 0.254 < default 0.3
    assert (await score({"type": "bleu", "max_order": 2}, case)).value == pytest.approx(
        math.sqrt(5 / 6 * 3 / 5)
    )


# --- embedding_similarity -----------------------------------------------------------


async def test_embedding_similarity_is_the_cosine_through_the_gateway() -> None:
    gateway = FakeGateway({"answer": [1.0, 0.0], "reference": [3.0, 4.0], "opposite": [-1, 0]})
    spec = {"type": "embedding_similarity", "alias": "embed-small", "threshold": 0.5}
    result = await score(spec, make_case("answer", reference="reference", gateway=gateway))
    assert result.value == pytest.approx(0.6)  # (1, 0) . (3, 4) / 5
    assert (result.passed, result.detail) == (True, None)
    assert gateway.calls == [("embed-small", ["answer", "reference"])]
    negative = await score(spec, make_case("answer", reference="opposite", gateway=gateway))
    assert negative.value == 0.0  # cosine -1 is floored at 0
    assert negative.detail == "cosine 0.000 < 0.5"


async def test_embedding_similarity_with_a_zero_vector_fails() -> None:
    gateway = FakeGateway({"answer": [0.0, 0.0], "reference": [1.0, 0.0]})
    spec = {"type": "embedding_similarity", "alias": "e"}
    result = await score(spec, make_case("answer", reference="reference", gateway=gateway))
    assert result == Score(0.0, False, "an embedding is all zeros")


# --- latency / cost -----------------------------------------------------------------


async def test_latency_ceiling() -> None:
    spec = {"type": "latency", "max_ms": 500}
    assert await score(spec, make_case("x", latency_ms=500)) == Score(1.0, True)
    assert await score(spec, make_case("x", latency_ms=731.4)) == Score(
        0.0, False, "731 ms > 500 ms"
    )


async def test_cost_ceiling_and_unknown_cost_fails() -> None:
    spec = {"type": "cost", "max_usd": 0.01}
    assert await score(spec, make_case("x", cost_usd=0.01)) == Score(1.0, True)
    over = await score(spec, make_case("x", cost_usd=0.02))
    assert over == Score(0.0, False, "$0.020000 > $0.01")
    assert await score(spec, make_case("x", cost_usd=None)) == Score(0.0, False, "unknown cost")

"""The admission estimates must not fall below what a call really uses."""

from __future__ import annotations

import pytest

from keel.providers.simulator._tokens import count_tokens
from keel.tenants import estimate

TEXTS = [
    "Hello there",
    "What is the capital of France? Answer in one word.",
    "def add(a: int, b: int) -> int:\n    return a + b\n" * 20,
    "東京は日本の首都です。" * 10,
    "Résumé: naïve café, façade — déjà vu. " * 5,
]


@pytest.mark.parametrize("text", TEXTS)
def test_input_estimate_is_at_least_the_simulators_count(text: str) -> None:
    body = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    }
    counted = count_tokens("Be brief.") + count_tokens(text)
    assert estimate.input_tokens("chat", body) >= counted


def test_input_estimate_counts_text_parts_tools_and_embedding_inputs() -> None:
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 300}]}]}
    assert estimate.input_tokens("chat", parts) >= 100
    with_tools = {**parts, "tools": [{"type": "function", "function": {"name": "f" * 90}}]}
    assert estimate.input_tokens("chat", with_tools) > estimate.input_tokens("chat", parts)
    assert estimate.input_tokens("embeddings", {"input": ["abc" * 30, "def" * 30]}) == 90
    assert estimate.input_tokens("embeddings", {"input": [1, 2, 3]}) == 3


def test_requested_output_multiplies_the_cap_by_the_choices() -> None:
    assert estimate.requested_output({"max_tokens": 100, "n": 3}) == 300
    assert estimate.requested_output({"max_completion_tokens": 50}) == 50
    assert estimate.requested_output({}) is None

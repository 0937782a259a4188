"""The simulation logic, without I/O: answers, failures, delays, outages, embeddings."""

from __future__ import annotations

import math
import statistics
from typing import Any

import orjson
import pytest

from keel.config import SimulatorProvider
from keel.errors import InvalidRequest
from keel.providers.simulator._answers import corrupt, derived_sentence, fill_schema
from keel.providers.simulator._embeddings import embed_text, embed_token_ids
from keel.providers.simulator._openai import parse_chat, parse_embedding_input
from keel.providers.simulator._tokens import count_tokens, split_tokens
from keel.providers.simulator.engine import (
    ChatRequest,
    Completion,
    Embeddings,
    Failure,
    SimulatorEngine,
)


def sim(**fields: Any) -> SimulatorProvider:
    return SimulatorProvider.model_validate({"kind": "simulator", **fields})


def ask(text: str, **body: Any) -> ChatRequest:
    return parse_chat({"messages": [{"role": "user", "content": text}], **body})


def completion(engine: SimulatorEngine, request: ChatRequest) -> Completion:
    result = engine.plan_chat(request)
    assert isinstance(result, Completion), result
    return result


def failure(engine: SimulatorEngine, request: ChatRequest) -> Failure:
    result = engine.plan_chat(request)
    assert isinstance(result, Failure), result
    return result


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- tokens ---------------------------------------------------------------------


def test_tokens_are_words_and_punctuation() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 0


def test_token_pieces_join_back_to_the_text() -> None:
    text = "  Paris, France.  It's big!\n"
    pieces = split_tokens(text)
    assert "".join(pieces) == text
    assert len(pieces) == count_tokens(text)


# --- answers --------------------------------------------------------------------


def test_first_matching_script_wins() -> None:
    engine = SimulatorEngine(
        sim(answers=[{"pattern": "(?i)france", "answer": "Paris"}, {"pattern": ".", "answer": "x"}])
    )
    assert completion(engine, ask("Capital of FRANCE?")).text == "Paris"
    assert completion(engine, ask("anything else")).text == "x"


def test_quality_zero_gives_the_wrong_answer() -> None:
    config = sim(
        quality=0,
        answers=[
            {"pattern": "france", "answer": "Paris", "wrong_answer": "Lyon"},
            {"pattern": "sum", "answer": "The sum is 42."},
        ],
    )
    engine = SimulatorEngine(config)
    wrong = completion(engine, ask("france"))
    assert (wrong.text, wrong.wrong) == ("Lyon", True)
    assert completion(engine, ask("sum")).text == "The sum is 53."


def test_quality_sets_the_share_of_wrong_answers() -> None:
    engine = SimulatorEngine(sim(seed=7, quality=0.7, answers=[{"pattern": "q", "answer": "A"}]))
    wrong = sum(completion(engine, ask("q")).text != "A" for _ in range(2000))
    assert 0.25 < wrong / 2000 < 0.35


def test_unscripted_answers_differ_by_prompt_and_are_stable() -> None:
    engine = SimulatorEngine(sim())
    first = completion(engine, ask("tell me about rollouts")).text
    assert first == completion(engine, ask("tell me about rollouts")).text
    assert first != completion(engine, ask("tell me about budgets")).text
    assert 20 <= len(first.split()) < 40


def test_default_answer_is_used_when_nothing_matches() -> None:
    engine = SimulatorEngine(sim(default_answer="I am a simulator."))
    assert completion(engine, ask("hello")).text == "I am a simulator."


def test_corruption_changes_text_without_digits_completely() -> None:
    assert "Paris" not in corrupt("Paris")
    assert corrupt("Paris") == corrupt("Paris")
    assert derived_sentence("a") != derived_sentence("b")


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    engine = SimulatorEngine(sim(default_answer="one two three four five six"))
    result = completion(engine, ask("hi", max_completion_tokens=3))
    assert (result.text, result.finish_reason, result.completion_tokens) == (
        "one two three",
        "length",
        3,
    )
    assert completion(engine, ask("hi", max_tokens=50)).finish_reason == "stop"


def test_usage_counts_prompt_and_completion() -> None:
    engine = SimulatorEngine(sim(default_answer="Fine, thanks."))
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "How are you?"},
        ]
    }
    result = completion(engine, parse_chat(body))
    assert (result.prompt_tokens, result.completion_tokens) == (7, 4)


# --- tools and JSON ---------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "note": {"type": "string"},
            },
            "required": ["city", "days", "metric", "unit"],
        },
    },
}
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}


def test_tools_get_a_call_with_the_required_arguments() -> None:
    engine = SimulatorEngine(sim())
    result = completion(engine, ask("weather in Oslo", tools=[WEATHER, SEARCH]))
    assert result.finish_reason == "tool_calls"
    assert result.tool_call is not None
    assert result.tool_call.name == "get_weather"
    assert result.tool_call.input == {
        "city": "weather in Oslo",
        "days": 1,
        "metric": True,
        "unit": "c",
    }
    assert orjson.loads(result.tool_call.arguments) == result.tool_call.input


def test_tool_choice_names_the_tool_or_turns_tools_off() -> None:
    engine = SimulatorEngine(sim())
    forced = {"type": "function", "function": {"name": "search"}}
    call = completion(engine, ask("x", tools=[WEATHER, SEARCH], tool_choice=forced)).tool_call
    assert call is not None and call.name == "search"
    assert completion(engine, ask("x", tools=[WEATHER], tool_choice="none")).tool_call is None


def test_a_tool_result_is_answered_in_text() -> None:
    engine = SimulatorEngine(sim(default_answer="It is sunny."))
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "sunny"},
    ]
    result = completion(engine, parse_chat({"messages": messages, "tools": [WEATHER]}))
    assert (result.text, result.finish_reason) == ("It is sunny.", "stop")


def test_json_modes_answer_valid_json() -> None:
    engine = SimulatorEngine(sim(default_answer="yes"))
    plain = completion(engine, ask("q", response_format={"type": "json_object"}))
    assert orjson.loads(plain.text) == {"answer": "yes"}
    schema = {
        "type": "object",
        "properties": {"verdict": {"$ref": "#/$defs/Verdict"}, "score": {"type": "number"}},
        "required": ["verdict", "score"],
        "$defs": {
            "Verdict": {
                "type": "object",
                "properties": {
                    "ok": {"type": ["boolean", "null"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["ok", "tags"],
            }
        },
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "v", "schema": schema}}
    result = completion(engine, ask("q", response_format=fmt))
    assert orjson.loads(result.text) == {"verdict": {"ok": True, "tags": ["yes"]}, "score": 1.0}


def test_schema_filling_handles_unions_and_formats() -> None:
    schema = {"anyOf": [{"type": "null"}, {"type": "string", "format": "date"}]}
    assert fill_schema(schema, "t") == "2024-01-01"
    assert fill_schema({"type": "string", "maxLength": 2}, "hello") == "he"


def test_malformed_requests_are_invalid() -> None:
    with pytest.raises(InvalidRequest):
        parse_chat({"messages": []})
    with pytest.raises(InvalidRequest):
        ask("x", max_tokens=0)


# --- failures, determinism, delays --------------------------------------------------


def outcomes(engine: SimulatorEngine, n: int) -> list[tuple[str, float, bool]]:
    result = []
    for i in range(n):
        plan = engine.plan_chat(ask(f"question {i % 3}"))
        if isinstance(plan, Failure):
            result.append((plan.kind, 0.0, False))
        else:
            result.append(("ok", plan.latency_s, plan.wrong))
    return result


NOISY = {
    "error_rate": 0.1,
    "rate_limit_rate": 0.1,
    "timeout_rate": 0.1,
    "quality": 0.5,
    "latency": {"p50_ms": 100, "p99_ms": 900},
}


def test_a_seed_makes_outcomes_reproducible() -> None:
    first = outcomes(SimulatorEngine(sim(seed=3, **NOISY)), 300)
    assert first == outcomes(SimulatorEngine(sim(seed=3, **NOISY)), 300)
    assert first != outcomes(SimulatorEngine(sim(seed=4, **NOISY)), 300)
    kinds = {kind for kind, _, _ in first}
    assert kinds == {"ok", "error", "rate_limited", "timeout"}


def test_without_a_seed_runs_differ() -> None:
    assert outcomes(SimulatorEngine(sim(**NOISY)), 50) != outcomes(
        SimulatorEngine(sim(**NOISY)), 50
    )


@pytest.mark.parametrize(
    ("field", "kind", "status"),
    [
        ("rate_limit_rate", "rate_limited", 429),
        ("error_rate", "error", 500),
        ("timeout_rate", "timeout", 504),
    ],
)
def test_failure_rates(field: str, kind: str, status: int) -> None:
    engine = SimulatorEngine(sim(retry_after_s=2.5, **{field: 1.0}))
    result = failure(engine, ask("x"))
    assert (result.kind, result.status) == (kind, status)
    if kind == "rate_limited":
        assert result.retry_after == 2.5


def test_context_window_and_output_limit() -> None:
    engine = SimulatorEngine(sim(context_window=10, max_output_tokens=8))
    over = failure(engine, ask("one two three four five", max_tokens=6))
    assert (over.kind, over.status, over.param) == ("context_length", 400, "messages")
    too_many = failure(engine, ask("x", max_tokens=9))
    assert (too_many.kind, too_many.param) == ("invalid", "max_tokens")
    completion(engine, ask("one two three four five", max_tokens=5))


def test_latency_follows_p50_and_p99() -> None:
    engine = SimulatorEngine(sim(seed=1, latency={"p50_ms": 100, "p99_ms": 1000}))
    samples = sorted(completion(engine, ask("x")).latency_s for _ in range(5000))
    assert statistics.median(samples) == pytest.approx(0.1, rel=0.1)
    assert samples[int(0.99 * len(samples))] == pytest.approx(1.0, rel=0.25)
    assert samples[-1] <= 10.0


def test_constant_delays_and_token_pacing() -> None:
    engine = SimulatorEngine(
        sim(
            latency={"p50_ms": 50},
            ttft={"p50_ms": 20},
            tokens_per_second=10,
            default_answer="a b c d",
        )
    )
    result = completion(engine, ask("x"))
    assert result.ttft_s == 0.02
    assert result.token_gap_s == 0.1
    assert result.latency_s == pytest.approx(0.05 + 4 * 0.1)


def test_no_delays_by_default() -> None:
    result = completion(SimulatorEngine(sim()), ask("x"))
    assert (result.latency_s, result.ttft_s, result.token_gap_s) == (0.0, 0.0, 0.0)


def test_scheduled_and_repeating_outages() -> None:
    clock = FakeClock()
    outages = [
        {"start_s": 10, "duration_s": 5, "status": 502},
        {"start_s": 100, "duration_s": 1, "every_s": 10},
    ]
    engine = SimulatorEngine(sim(outages=outages), clock=clock)
    expected = {0: None, 10: 502, 14.9: 502, 15: None, 100.5: 503, 101: None, 120.2: 503, 125: None}
    for at, status in expected.items():
        clock.now = 1000.0 + at
        found = engine.outage_at(clock.now)
        assert (found[0] if found else None) == status, at
    clock.now = 1012.0
    result = failure(engine, ask("x"))
    assert (result.kind, result.status, result.retry_after) == ("outage", 502, 3.0)


def test_manual_outages_start_now_and_can_be_cleared() -> None:
    clock = FakeClock()
    engine = SimulatorEngine(sim(), clock=clock)
    engine.start_outage(30, 529)
    assert failure(engine, ask("x")).status == 529
    clock.now += 31
    completion(engine, ask("x"))
    engine.start_outage(30)
    engine.clear_outages()
    completion(engine, ask("x"))


# --- embeddings -----------------------------------------------------------------------


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_are_unit_vectors_that_track_word_overlap() -> None:
    cat = embed_text("the cat sat on the mat", 256)
    near = embed_text("The cat sat on a mat", 256)
    far = embed_text("quarterly revenue projections", 256)
    assert len(cat) == 256
    assert math.sqrt(cosine(cat, cat)) == pytest.approx(1.0)
    assert cosine(cat, near) > 0.7 > cosine(cat, far)
    assert embed_text("", 8) == embed_text("", 8)
    assert math.sqrt(
        cosine(embed_token_ids([1, 2], 8), embed_token_ids([1, 2], 8))
    ) == pytest.approx(1.0)


def test_embedding_inputs_and_usage() -> None:
    engine = SimulatorEngine(sim(embedding_dimensions=16))
    inputs = parse_embedding_input({"input": ["a b", "c"]})
    result = engine.plan_embeddings(inputs)
    assert isinstance(result, Embeddings)
    assert ([len(v) for v in result.vectors], result.prompt_tokens) == ([16, 16], 3)
    assert parse_embedding_input({"input": [1, 2, 3]}) == [[1, 2, 3]]
    assert parse_embedding_input({"input": [[1], [2]]}) == [[1], [2]]
    resized = engine.plan_embeddings(["x"], 4)
    assert isinstance(resized, Embeddings) and len(resized.vectors[0]) == 4
    with pytest.raises(InvalidRequest):
        parse_embedding_input({"input": [1, "a"]})

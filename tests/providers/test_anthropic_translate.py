"""OpenAI ⇄ Anthropic translation, as pure functions (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from keel.errors import InvalidRequest
from keel.providers._anthropic_translate import (
    StreamTranslator,
    to_anthropic_request,
    to_openai_response,
    to_openai_usage,
)


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return to_anthropic_request(body, model="claude-x", default_max_tokens=1024)


# --- request ----------------------------------------------------------------


def test_minimal_request_gets_model_and_required_max_tokens() -> None:
    assert translate(model="alias") == {
        "model": "claude-x",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert translate(max_tokens=10)["max_tokens"] == 10
    assert translate(max_tokens=10, max_completion_tokens=20)["max_tokens"] == 20


def test_system_and_developer_messages_become_system() -> None:
    out = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
            {"role": "user", "content": "hi"},
        ]
    )
    assert out["system"] == "Be brief.\n\nBe kind."
    assert [m["role"] for m in out["messages"]] == ["user"]


def test_sampling_params_stop_and_user() -> None:
    out = translate(temperature=0.2, top_p=0.9, stop="END", user="u-1", seed=7)
    assert out["temperature"] == 0.2
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-1"}
    assert "seed" not in out
    assert translate(stop=["a", "b"])["stop_sequences"] == ["a", "b"]


def test_images_become_image_blocks() -> None:
    out = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                ],
            }
        ]
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
    ]


def test_tool_round_trip_alternates_roles() -> None:
    out = translate(
        messages=[
            {"role": "user", "content": "weather in Oslo and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "cold"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "warm"}],
            },
            {"role": "user", "content": "thanks"},
        ]
    )
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "cold"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "warm"},
        {"type": "text", "text": "thanks"},
    ]


def test_tools_and_tool_choice() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Get weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    out = translate(tools=[tool], tool_choice="required", parallel_tool_calls=False)
    assert out["tools"] == [
        {
            "name": "weather",
            "description": "Get weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert translate(tools=[tool], tool_choice="auto")["tool_choice"] == {"type": "auto"}
    assert translate(tools=[tool], tool_choice="none")["tool_choice"] == {"type": "none"}
    named = {"type": "function", "function": {"name": "weather"}}
    assert translate(tools=[tool], tool_choice=named)["tool_choice"] == {
        "type": "tool",
        "name": "weather",
    }
    assert "tool_choice" not in translate(tools=[tool])


def test_json_schema_response_format_becomes_a_system_instruction() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = translate(
        messages=[{"role": "system", "content": "Sys."}, {"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    )
    assert out["system"].startswith("Sys.\n\n")
    assert '"properties":{"a":{"type":"integer"}}' in out["system"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, None),
        ({"messages": [{"role": "function", "content": "x", "name": "f"}]}, None),
        ({"tool_choice": 5}, "tool_choice"),
    ],
)
def test_unsupported_params_are_refused_by_name(params: dict[str, Any], param: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate(**params)
    assert caught.value.status == 400
    if param is not None:
        assert caught.value.param == param
        assert param in caught.value.message
    else:
        assert caught.value.param is not None and caught.value.param.startswith("messages[0]")


def test_harmless_defaults_are_accepted() -> None:
    out = translate(n=1, logprobs=False, presence_penalty=0, frequency_penalty=0.0)
    assert "n" not in out


def test_bad_tool_arguments_name_the_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}],
                }
            ]
        )
    assert caught.value.param == "messages[0].tool_calls[0].function.arguments"


def test_request_body_is_not_mutated() -> None:
    messages = [{"role": "user", "content": "hi"}]
    body = {"messages": messages, "stop": ["x"]}
    out = to_anthropic_request(body, model="m", default_max_tokens=5)
    out["messages"][0]["content"].append({"type": "text", "text": "more"})
    assert body == {"messages": [{"role": "user", "content": "hi"}], "stop": ["x"]}


# --- response ---------------------------------------------------------------


def test_response_with_text_and_tool_use() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x-2025",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Let me check. "},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    out = to_openai_response(message, created=123)
    assert out["id"] == "msg_1"
    assert out["object"] == "chat.completion"
    assert out["created"] == 123
    assert out["model"] == "claude-x-2025"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check. "
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
        }
    ]


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length")],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    message = {"id": "m", "model": "c", "content": [], "stop_reason": stop, "usage": {}}
    choice = to_openai_response(message)["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice["message"]["content"] is None


def test_usage_counts_cached_tokens_once() -> None:
    usage = to_openai_usage(
        {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 50,
            "output_tokens": 7,
        }
    )
    assert usage["prompt_tokens"] == 160  # cache reads and writes are input tokens
    assert usage["prompt_tokens_details"]["cached_tokens"] == 100  # a subset, not extra
    assert usage["prompt_tokens_details"]["cache_creation_tokens"] == 50
    assert usage["completion_tokens"] == 7
    assert usage["total_tokens"] == 167


# --- stream -----------------------------------------------------------------


def stream_events() -> list[dict[str, Any]]:
    return [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "model": "claude-x-2025",
                "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '"Oslo"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 12},
        },
        {"type": "message_stop"},
    ]


def test_stream_translation() -> None:
    translator = StreamTranslator(model="claude-x", created=9)
    chunks = []
    for event in stream_events():
        assert not translator.done
        chunks.extend(translator.feed(event))
    assert translator.done

    assert all(c["id"] == "msg_1" and c["created"] == 9 for c in chunks)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "weather", "arguments": ""},
            }
        ]
    }
    arguments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[3:5]]
    assert "".join(arguments) == '{"city": "Oslo"}'
    assert all(d["tool_calls"][0]["index"] == 0 for d in deltas[3:5])
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 25,
        "completion_tokens": 12,
        "total_tokens": 37,
        "prompt_tokens_details": {"cached_tokens": 5, "cache_creation_tokens": 0},
    }


def test_stream_ignores_unknown_and_thinking_events() -> None:
    translator = StreamTranslator(model="m")
    assert translator.feed({"type": "some_future_event"}) == []
    thinking = {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta"}}
    assert translator.feed(thinking) == []

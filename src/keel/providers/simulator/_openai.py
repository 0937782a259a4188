"""The OpenAI wire format: request parsing and response rendering.

Parsing raises ``keel.errors.InvalidRequest``; the caller decides whether that
becomes a 400 body (server) or ``UpstreamRejected`` (in-process upstream).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from keel.errors import InvalidRequest
from keel.providers.simulator._embeddings import to_base64
from keel.providers.simulator._tokens import count_tokens
from keel.providers.simulator.engine import (
    ChatRequest,
    Completion,
    Embeddings,
    Failure,
    Json,
    Tool,
    pick_tool,
)

# A delay before a chunk (seconds) and the chunk itself.
Frame = tuple[float, Json]


def content_text(content: Any) -> str:
    """The text of a message ``content``: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _positive_int(body: Json, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'{name}' must be a positive integer", param=name)
    return value


def parse_chat(body: Json) -> ChatRequest:
    """Reduce a chat.completions request body to a ``ChatRequest``."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    prompt_tokens = 0
    last_user = ""
    for message in messages:
        if not isinstance(message, dict):
            raise InvalidRequest("each message must be an object", param="messages")
        text = content_text(message.get("content"))
        prompt_tokens += count_tokens(text)
        for call in message.get("tool_calls") or ():
            prompt_tokens += count_tokens(str(call.get("function", {}).get("arguments", "")))
        if message.get("role") == "user":
            last_user = text
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    return ChatRequest(
        last_user=last_user,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        tool=_tool(body, after_tool_result=messages[-1].get("role") == "tool"),
        json_mode=_response_type(body) == "json_object",
        json_schema=_json_schema(body),
    )


def _tool(body: Json, *, after_tool_result: bool) -> Tool | None:
    tools = [
        Tool(str(fn.get("name", "")), fn.get("parameters") or {})
        for t in body.get("tools") or ()
        if isinstance(t, dict) and isinstance(fn := t.get("function"), dict)
    ]
    choice = body.get("tool_choice")
    forced = None
    if isinstance(choice, dict):
        forced = (choice.get("function") or {}).get("name")
    return pick_tool(tools, forced, disabled=choice == "none", after_tool_result=after_tool_result)


def _response_type(body: Json) -> str | None:
    fmt = body.get("response_format")
    return fmt.get("type") if isinstance(fmt, dict) else None


def _json_schema(body: Json) -> Json | None:
    if _response_type(body) != "json_schema":
        return None
    spec = body["response_format"].get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else {"type": "object"}


def parse_embedding_input(body: Json) -> list[str | list[int]]:
    """``input`` as a list of texts or token-id lists."""
    raw = body.get("input")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(i, int) for i in raw):
            return [raw]
        if all(isinstance(i, str) for i in raw):
            return list(raw)
        if all(isinstance(i, list) and all(isinstance(t, int) for t in i) for i in raw):
            return list(raw)
    raise InvalidRequest(
        "'input' must be a string, an array of strings, or token ids", param="input"
    )


def dimensions(body: Json) -> int | None:
    """The optional ``dimensions`` override of an embeddings request."""
    value = _positive_int(body, "dimensions")
    if value is not None and value > 4096:
        raise InvalidRequest("'dimensions' must be at most 4096", param="dimensions")
    return value


# --- rendering ---------------------------------------------------------------


def usage(completion: Completion) -> Json:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def _tool_calls(completion: Completion) -> list[Json] | None:
    call = completion.tool_call
    if call is None:
        return None
    return [
        {
            "id": f"call_{call.id}",
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
    ]


def completion_body(completion: Completion, model: str) -> Json:
    """A ``chat.completion`` response."""
    message: Json = {
        "role": "assistant",
        "content": completion.text if completion.tool_call is None else None,
        "refusal": None,
    }
    tool_calls = _tool_calls(completion)
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{completion.key}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": usage(completion),
        "system_fingerprint": "keel-sim",
    }


def chunks(completion: Completion, model: str, *, include_usage: bool) -> Iterator[Frame]:
    """``chat.completion.chunk`` dicts, each with the delay to wait before sending it.

    The first chunk waits the time to first token; every later token waits one
    token gap; the closing chunks follow at once.
    """
    head: Json = {
        "id": f"chatcmpl-{completion.key}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "keel-sim",
    }
    if include_usage:
        head["usage"] = None

    def chunk(delta: Json, finish: str | None = None) -> Json:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice]}

    gap = completion.token_gap_s
    call = completion.tool_call
    if call is None:
        yield completion.ttft_s, chunk({"role": "assistant", "content": "", "refusal": None})
        for i, piece in enumerate(completion.pieces):
            yield (gap if i else 0.0), chunk({"content": piece})
    else:
        opening = {"index": 0, "id": f"call_{call.id}", "type": "function"}
        opening["function"] = {"name": call.name, "arguments": ""}
        yield (
            completion.ttft_s,
            chunk({"role": "assistant", "content": None, "tool_calls": [opening]}),
        )
        for piece in _argument_pieces(call.arguments):
            yield gap, chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    yield 0.0, chunk({}, completion.finish_reason)
    if include_usage:
        yield 0.0, {**head, "choices": [], "usage": usage(completion)}


def _argument_pieces(arguments: str) -> list[str]:
    # OpenAI streams arguments in short fragments; a few characters each is close enough.
    return [arguments[i : i + 8] for i in range(0, len(arguments), 8)]


def embeddings_body(result: Embeddings, model: str, *, base64: bool) -> Json:
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": i,
                "embedding": to_base64(vector) if base64 else vector,
            }
            for i, vector in enumerate(result.vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


_ERROR_SHAPES: dict[str, tuple[str, str | None]] = {
    "rate_limited": ("requests", "rate_limit_exceeded"),
    "error": ("server_error", None),
    "timeout": ("timeout", "timeout"),
    "context_length": ("invalid_request_error", "context_length_exceeded"),
    "invalid": ("invalid_request_error", None),
}


def error_body(failure: Failure) -> Json:
    """OpenAI's error body for ``failure``."""
    if failure.kind == "outage":
        kind, code = _outage_shape(failure.status)
    else:
        kind, code = _ERROR_SHAPES[failure.kind]
    return {
        "error": {"message": failure.message, "type": kind, "code": code, "param": failure.param}
    }


def _outage_shape(status: int) -> tuple[str, str | None]:
    if status == 429:
        return "requests", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", "service_unavailable"
    return "invalid_request_error", None

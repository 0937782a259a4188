"""The Anthropic Messages wire format: request parsing and response rendering."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from keel.errors import InvalidRequest
from keel.providers.simulator._tokens import count_tokens
from keel.providers.simulator.engine import (
    ChatRequest,
    Completion,
    Failure,
    Json,
    Tool,
    pick_tool,
)

# A delay before an event (seconds), the event name and its data.
Event = tuple[float, str, Json]

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _block_text(block: Any) -> tuple[str, bool]:
    """The countable text of one content block, and whether it is a tool result."""
    if not isinstance(block, dict):
        return "", False
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", "")), False
    if kind == "tool_use":
        return str(block.get("input", "")), False
    if kind == "tool_result":
        content = block.get("content")
        text = content if isinstance(content, str) else " ".join(_texts(content))
        return text, True
    return "", False


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [_block_text(block)[0] for block in content]
    return []


def parse_messages(body: Json) -> ChatRequest:
    """Reduce a Messages API request body to a ``ChatRequest``."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: must be a non-empty list", param="messages")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest("max_tokens: field required, a positive integer", param="max_tokens")
    prompt_tokens = sum(count_tokens(t) for t in _texts(body.get("system")))
    last_user = ""
    after_tool_result = False
    for message in messages:
        if not isinstance(message, dict):
            raise InvalidRequest("messages: each message must be an object", param="messages")
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        texts, results = [], False
        for block in blocks:
            text, is_result = _block_text(block)
            texts.append(text)
            results = results or is_result
        prompt_tokens += sum(count_tokens(t) for t in texts)
        if message.get("role") == "user":
            last_user = " ".join(t for t in texts if t)
            after_tool_result = results
    return ChatRequest(
        last_user=last_user,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        tool=_tool(body, after_tool_result=after_tool_result),
    )


def _tool(body: Json, *, after_tool_result: bool) -> Tool | None:
    tools = [
        Tool(str(t.get("name", "")), t.get("input_schema") or {})
        for t in body.get("tools") or ()
        if isinstance(t, dict)
    ]
    choice = body.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {}
    forced = choice.get("name") if choice.get("type") == "tool" else None
    disabled = choice.get("type") == "none"
    return pick_tool(tools, forced, disabled=disabled, after_tool_result=after_tool_result)


# --- rendering ---------------------------------------------------------------


def _content(completion: Completion) -> list[Json]:
    call = completion.tool_call
    if call is not None:
        return [
            {"type": "tool_use", "id": f"toolu_{call.id}", "name": call.name, "input": call.input}
        ]
    return [{"type": "text", "text": completion.text}]


def message_body(completion: Completion, model: str) -> Json:
    """A Messages API response."""
    return {
        "id": f"msg_{completion.key}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _content(completion),
        "stop_reason": _STOP_REASONS[completion.finish_reason],
        "stop_sequence": None,
        "usage": {
            "input_tokens": completion.prompt_tokens,
            "output_tokens": completion.completion_tokens,
        },
    }


def events(completion: Completion, model: str) -> Iterator[Event]:
    """The Messages streaming events, each with the delay to wait before sending it."""
    start = {**message_body(completion, model), "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": completion.prompt_tokens, "output_tokens": 1}
    yield completion.ttft_s, "message_start", {"type": "message_start", "message": start}
    call = completion.tool_call
    if call is None:
        block: Json = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in completion.pieces]
    else:
        block = {"type": "tool_use", "id": f"toolu_{call.id}", "name": call.name, "input": {}}
        args = call.arguments
        deltas = [
            {"type": "input_json_delta", "partial_json": args[i : i + 8]}
            for i in range(0, len(args), 8)
        ]
    yield (
        0.0,
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": block},
    )
    gap = completion.token_gap_s
    for i, delta in enumerate(deltas):
        data = {"type": "content_block_delta", "index": 0, "delta": delta}
        yield (gap if i else 0.0), "content_block_delta", data
    yield 0.0, "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield (
        0.0,
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": _STOP_REASONS[completion.finish_reason],
                "stop_sequence": None,
            },
            "usage": {"output_tokens": completion.completion_tokens},
        },
    )
    yield 0.0, "message_stop", {"type": "message_stop"}


_OUTAGE_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error(failure: Failure) -> tuple[int, Json]:
    """Anthropic's status and error body for ``failure``."""
    status = failure.status
    message = failure.message
    if failure.kind == "error":
        # Anthropic reports load shedding as 529, not 500.
        status, kind, message = 529, "overloaded_error", "Overloaded"
    elif failure.kind == "rate_limited":
        kind = "rate_limit_error"
    elif failure.kind == "timeout":
        kind = "timeout_error"
    elif failure.kind in ("context_length", "invalid"):
        kind = "invalid_request_error"
    else:
        kind = _OUTAGE_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    if failure.kind == "context_length":
        message = f"prompt is too long: {message}"
    return status, {"type": "error", "error": {"type": kind, "message": message}}

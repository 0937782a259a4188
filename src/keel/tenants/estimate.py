"""Upper bounds on a request's tokens, known before the upstream is called.

A budget reservation must not be smaller than what the call can cost, so
input is counted from UTF-8 bytes rather than characters: byte-level BPE
tokenizers never make a token of less than one byte, and the common ones
average about four bytes a token on English, 2.5 to 3 on code and dense
punctuation, and 2 to 3 on CJK text. Half the bytes, plus a per-message
overhead, errs high for all of these; the reservation is corrected to the
upstream's count when the call ends.
"""

from __future__ import annotations

from typing import Any

from keel.providers.base import Operation

BYTES_PER_TOKEN = 2
# Role, separators and the reply's priming: OpenAI documents 3 to 4 per message.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3
# Output a budgeted request may produce when neither it nor its tier caps it;
# the gateway then sets this cap on the request so the reservation holds.
DEFAULT_MAX_OUTPUT = 4096


def input_tokens(operation: Operation, body: dict[str, Any]) -> int:
    """A conservative count of the request's input tokens."""
    if operation == "embeddings":
        return _embedding_tokens(body.get("input"))
    total = TOKENS_PER_REPLY
    for message in body.get("messages") or ():
        total += TOKENS_PER_MESSAGE + _bytes_tokens(_text_bytes(message))
    tools = body.get("tools")
    if tools:
        total += _bytes_tokens(len(repr(tools).encode()))
    return total


def requested_output(body: dict[str, Any]) -> int | None:
    """The request's own output cap times its choices, if it set one."""
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(cap, int):
        return None
    n = body.get("n")
    return cap * (n if isinstance(n, int) and n > 0 else 1)


def _text_bytes(message: Any) -> int:
    if not isinstance(message, dict):
        return 0
    size = 0
    content = message.get("content")
    if isinstance(content, str):
        size += len(content.encode())
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                size += len(part["text"].encode())
    for name in ("name", "tool_calls", "function_call"):
        if message.get(name):
            size += len(repr(message[name]).encode())
    return size


def _embedding_tokens(value: Any) -> int:
    if isinstance(value, str):
        return _bytes_tokens(len(value.encode()))
    if not isinstance(value, list):
        return 0
    if all(isinstance(v, int) for v in value):
        return len(value)  # already tokens
    return sum(_embedding_tokens(v) for v in value)


def _bytes_tokens(size: int) -> int:
    return -(-size // BYTES_PER_TOKEN)

"""Offline token estimates, for decisions that cannot wait for the upstream's count.

About four characters of English make one token for the common tokenizers.
Callers that must not over-estimate (skipping a deployment whose context
window might still fit) use this as is; the upstream's own count remains the
authority whenever it reports one.
"""

from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 4


def tokens_for_chars(chars: int) -> int:
    """Tokens in ``chars`` characters of text, rounded up."""
    return -(-chars // CHARS_PER_TOKEN)


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of text in a chat request's messages (text parts only)."""
    chars = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
    return chars

"""A cheap, deterministic token estimator: one token per word or punctuation mark.

It is not any real tokenizer; it only has to be stable, fast and roughly
proportional to text length, so usage numbers and context-window checks
behave plausibly in tests and load tests.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+|[^\w\s]")
# The same units with their leading whitespace, so the pieces join back to the text.
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")


def count_tokens(text: str) -> int:
    """Estimated tokens in ``text``."""
    return len(_TOKEN.findall(text)) if text else 0


def split_tokens(text: str) -> list[str]:
    """``text`` cut into one piece per token; ``"".join(pieces) == text``."""
    pieces = _PIECE.findall(text)
    joined = sum(len(p) for p in pieces)
    if joined < len(text):
        # Only trailing whitespace is left unmatched; keep it so nothing is lost.
        if pieces:
            pieces[-1] += text[joined:]
        else:
            pieces.append(text)
    return pieces

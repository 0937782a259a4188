"""Hashed bag-of-words embeddings.

Each word (or token id) adds +1 or -1 to one of ``dimensions`` buckets chosen
by its hash, and the vector is L2-normalised. Texts sharing words share
buckets, so cosine similarity tracks word overlap: good enough to exercise a
semantic cache, free, and identical on every machine.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import Iterable

_WORD = re.compile(r"\w+")


def _bucket(token: str, dimensions: int) -> tuple[int, float]:
    value = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
    # The low bit picks the sign so collisions cancel out instead of piling up.
    return (value >> 1) % dimensions, 1.0 if value & 1 else -1.0


def _vector(tokens: Iterable[str], dimensions: int) -> list[float]:
    vector = [0.0] * dimensions
    for token in tokens:
        index, sign = _bucket(token, dimensions)
        vector[index] += sign
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        # No words, or words that cancelled out: a zero vector would break cosine
        # similarity downstream, so answer a fixed unit vector instead.
        vector[_bucket("", dimensions)[0]] = 1.0
        return vector
    return [v / norm for v in vector]


def embed_text(text: str, dimensions: int) -> list[float]:
    """The unit vector for ``text`` (case-insensitive words)."""
    return _vector(_WORD.findall(text.lower()), dimensions)


def embed_token_ids(ids: list[int], dimensions: int) -> list[float]:
    """The unit vector for a pre-tokenised input."""
    return _vector((f"#{i}" for i in ids), dimensions)


def to_base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: base64``: little-endian float32, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")

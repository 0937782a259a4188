"""The shared aiohttp plumbing: SSE decoding and draining a finished stream."""

from __future__ import annotations

from keel.providers._http import SSEDecoder, SSEEvent


def decode(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_sse_handles_crlf_split_across_chunks() -> None:
    assert decode(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n") == [
        SSEEvent("message", b"a"),
        SSEEvent("message", b"b"),
    ]


def test_sse_named_events_multiline_data_and_comments() -> None:
    events = decode(b"\xef\xbb\xbf: hi\nevent: ping\ndata: x\ndata:y\n\n", b"data\n\n")
    assert events == [SSEEvent("ping", b"x\ny")]


def test_sse_bare_cr_line_ends_and_partial_lines() -> None:
    assert decode(b"da", b'ta: {"a"', b": 1}\r\r") == [SSEEvent("message", b'{"a": 1}')]


def test_sse_incomplete_event_is_not_dispatched() -> None:
    assert decode(b"data: half") == []
    assert decode(b"data: no blank line\n") == []

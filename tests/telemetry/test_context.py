import pytest

from keel.telemetry.context import new_span_id, parse_traceparent, traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_continues_a_valid_traceparent() -> None:
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-01") == (TRACE, SPAN)


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", f"00-{'0' * 32}-{SPAN}-01", f"00-{TRACE}-{'0' * 16}-01", f"00-{TRACE}"],
)
def test_starts_a_new_trace_on_missing_or_bad_headers(header: str | None) -> None:
    trace_id, parent = parse_traceparent(header)
    assert parent is None
    assert len(trace_id) == 32 and trace_id != TRACE and int(trace_id, 16) > 0


def test_the_returned_header_points_at_keels_span() -> None:
    span = new_span_id()
    assert traceparent(TRACE, span) == f"00-{TRACE}-{span}-01"
    assert parse_traceparent(traceparent(TRACE, span)) == (TRACE, span)

"""OTLPSink against a real OTLP/HTTP receiver on loopback that decodes the protobuf."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import SecretStr

from keel.config import OTLPConfig
from keel.telemetry.otlp import OTLPSink
from otlp_support import Receiver, attributes, otlp_receiver
from telemetry_records import CALLER_SPAN_ID, ROOT_SPAN_ID, TRACE_ID, make_record

API_KEY = "collector-key-do-not-log"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with otlp_receiver(monkeypatch) as running:
        yield running


def sink_for(receiver: Receiver, **kwargs: Any) -> OTLPSink:
    config = OTLPConfig(
        endpoint=receiver.url,
        headers={"authorization": SecretStr(f"Bearer {API_KEY}")},
        timeout_s=0.5,
        service_name="keel-test",
    )
    return OTLPSink(config, **kwargs)


def test_export_delivers_genai_spans_with_trace_and_parent_ids(receiver: Receiver) -> None:
    sink = sink_for(receiver)
    sink.export([make_record(), make_record(request_id="req_2", span_id="1" * 16)])
    sink.shutdown()

    assert sink.exported == 2 and sink.failed == 0
    assert receiver.headers[0]["authorization"] == f"Bearer {API_KEY}"
    (request,) = receiver.requests
    resource = attributes(request.resource_spans[0].resource.attributes)
    assert resource["service.name"] == "keel-test"

    spans = receiver.spans()
    assert len(spans) == 10
    assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
    root = next(s for s in spans if s.span_id.hex() == ROOT_SPAN_ID)
    assert root.name == "chat fast"
    assert root.kind == Span.SPAN_KIND_SERVER
    assert root.parent_span_id.hex() == CALLER_SPAN_ID
    got = attributes(root.attributes)
    assert got["gen_ai.operation.name"] == "chat"
    assert got["gen_ai.request.model"] == "fast"
    assert got["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert got["gen_ai.provider.name"] == "openai"
    assert got["gen_ai.usage.input_tokens"] == 120
    assert got["gen_ai.usage.output_tokens"] == 30
    assert got["gen_ai.usage.cache_read.input_tokens"] == 100
    assert got["gen_ai.response.finish_reasons"] == ["stop"]
    assert got["keel.cost_usd"] == 0.0025
    assert got["keel.tenant"] == "acme"
    # Content stays home unless the sink was told to capture it.
    assert "gen_ai.input.messages" not in got

    children = [s for s in spans if s.parent_span_id.hex() == ROOT_SPAN_ID]
    assert sorted(s.name for s in children) == [
        "chat gpt-4o",
        "chat gpt-4o-mini",
        "keel.auth",
        "keel.guardrail",
    ]
    failed = next(s for s in children if s.name == "chat gpt-4o")
    assert failed.kind == Span.SPAN_KIND_CLIENT
    assert failed.status.code == Status.STATUS_CODE_ERROR
    assert attributes(failed.attributes)["error.type"] == "provider_unavailable"


def test_content_is_exported_only_when_the_sink_captures_it(receiver: Receiver) -> None:
    sink = sink_for(receiver, capture_content=True)
    sink.export([make_record()])
    sink.shutdown()
    root = next(s for s in receiver.spans() if s.span_id.hex() == ROOT_SPAN_ID)
    assert "secret question" in str(attributes(root.attributes)["gen_ai.input.messages"])


def test_a_failing_collector_is_logged_and_counted_never_raised(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 503
    sink = sink_for(receiver)
    with caplog.at_level(logging.WARNING):
        sink.export([make_record(), make_record(request_id="req_2")])
    sink.shutdown()

    assert receiver.headers, "the collector was never called"
    assert sink.failed == 2 and sink.exported == 0
    assert any(r.name == "keel.telemetry.otlp" for r in caplog.records)
    assert API_KEY not in caplog.text


def test_an_unreachable_collector_does_not_raise(receiver: Receiver) -> None:
    config = OTLPConfig(endpoint="http://127.0.0.1:9/v1/traces", timeout_s=0.2)
    sink = OTLPSink(config)
    sink.export([make_record()])
    sink.shutdown()
    assert sink.failed == 1


def test_an_empty_batch_sends_nothing_and_shutdown_is_idempotent(receiver: Receiver) -> None:
    sink = sink_for(receiver)
    sink.export([])
    sink.shutdown()
    sink.shutdown()
    assert receiver.headers == []
    sink.export([make_record()])  # after shutdown: counted, not raised
    assert sink.failed == 1


def test_a_malformed_record_is_counted_and_the_rest_still_go_out(receiver: Receiver) -> None:
    sink = sink_for(receiver)
    sink.export([make_record(parent_span_id="not-hex"), make_record(request_id="req_2")])
    sink.shutdown()
    assert (sink.failed, sink.exported) == (1, 1)
    assert len(receiver.spans()) == 5

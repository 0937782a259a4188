"""The error table shared by the HTTP adapters and the simulator, and the proof
that the in-process simulator fails exactly as ``keel sim`` does over HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
import uvicorn

from keel.config import OpenAICompatProvider, SimulatorProvider
from keel.errors import ProviderError, UpstreamNotFound, UpstreamRejected
from keel.providers import UpstreamCall
from keel.providers._errors import error_from_payload, error_from_status, parse_retry_after, redact
from keel.providers.openai_compat import OpenAICompatUpstream
from keel.providers.simulator import SimulatorUpstream, create_sim_app

KEY = "sk-test-0123456789abcdef"


def test_retry_after_http_date() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    header = format_datetime(datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC), usegmt=True)
    assert parse_retry_after({"retry-after": header}, now=now) == 30.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_auth_error_message_never_contains_the_key() -> None:
    body = b'{"error": {"message": "bad key sk-test-0123456789abcdef"}}'
    error = error_from_status(401, {}, body, secrets=[KEY])
    assert KEY not in error.message


def test_rejected_message_is_redacted_if_upstream_echoes_the_key() -> None:
    body = b'{"error": {"message": "bad header sk-test-0123456789abcdef"}}'
    error = error_from_status(400, {}, body, secrets=[KEY])
    assert isinstance(error, UpstreamRejected)
    assert KEY not in error.message


def test_not_found_is_keels_fault_not_the_callers() -> None:
    error = error_from_status(404, {}, b'{"error": {"message": "no such model"}}')
    assert isinstance(error, UpstreamNotFound)
    assert not isinstance(error, UpstreamRejected)
    assert (error.status, error.code, error.retryable) == (502, "upstream_not_found", False)
    in_stream = error_from_payload(None, {"error": {"type": "not_found_error"}})
    assert isinstance(in_stream, UpstreamNotFound)


def test_redact_hides_every_secret_longest_first() -> None:
    assert redact("a=sk-123456 b=sk-123", ["sk-123", "sk-123456", ""]) == "a=*** b=***"


# --- in-process simulator == keel sim over HTTP ------------------------------


@asynccontextmanager
async def sim_on_loopback(config: SimulatorProvider) -> AsyncIterator[tuple[str, Any]]:
    """``keel sim``'s app on a loopback port; yields its base URL and engine."""
    app = create_sim_app(config)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the simulator server failed to start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", app.state.engine
    finally:
        server.should_exit = True
        await task
        sock.close()


def chat(**body: Any) -> UpstreamCall:
    messages = [{"role": "user", "content": "one two three four five six"}]
    return UpstreamCall("chat", "m", {"messages": messages, **body}, timeout=0.5)


async def failures(
    fields: dict[str, Any], call: UpstreamCall, outage: int | None = None
) -> tuple[ProviderError, ProviderError]:
    """The error of the same call in-process and through openai_compat over HTTP."""
    config = SimulatorProvider.model_validate({"kind": "simulator", **fields})
    sim = SimulatorUpstream(config)
    if outage is not None:
        sim.engine.start_outage(60, outage)
    with pytest.raises(ProviderError) as in_process:
        await sim.send(call)
    async with sim_on_loopback(config) as (url, engine):
        if outage is not None:
            engine.start_outage(60, outage)
        adapter = OpenAICompatUpstream(
            OpenAICompatProvider(kind="openai_compat", base_url=url), name="sim-http"
        )
        try:
            with pytest.raises(ProviderError) as over_http:
                await adapter.send(call)
        finally:
            await adapter.aclose()
    return in_process.value, over_http.value


def assert_same(in_process: ProviderError, over_http: ProviderError) -> None:
    assert type(in_process) is type(over_http)
    assert in_process.upstream_status == over_http.upstream_status
    assert in_process.param == over_http.param
    assert (in_process.retry_after is None) == (over_http.retry_after is None)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 413, 429, 500, 503, 529])
async def test_outages_fail_alike_in_process_and_over_http(status: int) -> None:
    in_process, over_http = await failures({}, chat(), outage=status)
    assert_same(in_process, over_http)
    assert in_process.message == over_http.message
    # Every outage answer carries Retry-After (the time left), in-process too.
    assert in_process.retry_after == pytest.approx(over_http.retry_after, abs=1)


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        ({"rate_limit_rate": 1.0, "retry_after_s": 2}, {}),
        ({"error_rate": 1.0}, {}),
        ({"timeout_rate": 1.0}, {}),
        ({"context_window": 5}, {}),
        ({"max_output_tokens": 10}, {"max_tokens": 20}),
    ],
)
async def test_simulated_failures_fail_alike_in_process_and_over_http(
    fields: dict[str, Any], body: dict[str, Any]
) -> None:
    assert_same(*await failures(fields, chat(**body)))

"""The simulator's HTTP server: OpenAI and Anthropic wire formats, errors, control
endpoints, client disconnects, the official SDKs, and the ``keel sim`` command."""

from __future__ import annotations

import asyncio
import base64
import struct
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest
from click.testing import CliRunner
from starlette.types import ASGIApp, Message

from keel.cli.main import cli
from keel.config import SimulatorProvider
from keel.providers.simulator import create_sim_app

Json = dict[str, Any]


def make_app(**fields: Any) -> ASGIApp:
    return create_sim_app(SimulatorProvider.model_validate({"kind": "simulator", **fields}))


@pytest.fixture
async def client() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    opened: list[httpx.AsyncClient] = []

    def connect(**fields: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=make_app(**fields))
        opened.append(httpx.AsyncClient(transport=transport, base_url="http://sim"))
        return opened[-1]

    yield connect
    for http in opened:
        await http.aclose()


def user(text: str) -> list[Json]:
    return [{"role": "user", "content": text}]


def sse_data(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]


def sse_events(text: str) -> list[tuple[str, Json]]:
    events = []
    for block in text.strip().split("\n\n"):
        name, data = block.split("\n")
        events.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return events


# --- OpenAI ---------------------------------------------------------------------------


async def test_chat_completion(client: Callable[..., httpx.AsyncClient]) -> None:
    http = client(default_answer="Hello!")
    response = await http.post(
        "/v1/chat/completions", json={"model": "gpt-test", "messages": user("hi")}
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["object"], body["model"]) == ("chat.completion", "gpt-test")
    assert body["choices"][0]["message"]["content"] == "Hello!"
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


@pytest.mark.parametrize("include_usage", [True, False])
async def test_chat_streaming_sse(
    client: Callable[..., httpx.AsyncClient], include_usage: bool
) -> None:
    http = client(default_answer="One, two.")
    body = {
        "model": "m",
        "messages": user("count"),
        "stream": True,
        "stream_options": {"include_usage": include_usage},
    }
    response = await http.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [orjson.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "One, two."
    usage_chunks = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert usage_chunks == [chunks[-1]]
        assert chunks[-1]["usage"]["completion_tokens"] == 4
    else:
        assert usage_chunks == []


async def test_embeddings_floats_and_base64(client: Callable[..., httpx.AsyncClient]) -> None:
    http = client(embedding_dimensions=32)
    floats = (await http.post("/v1/embeddings", json={"model": "e", "input": "hello world"})).json()
    vector = floats["data"][0]["embedding"]
    assert (len(vector), floats["model"], floats["usage"]["prompt_tokens"]) == (32, "e", 2)
    packed = (
        await http.post(
            "/v1/embeddings",
            json={"model": "e", "input": ["hello world"], "encoding_format": "base64"},
        )
    ).json()
    decoded = struct.unpack("<32f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(vector)


async def test_models_and_health(client: Callable[..., httpx.AsyncClient]) -> None:
    http = client()
    models = (await http.get("/v1/models")).json()
    assert models["object"] == "list" and models["data"][0]["object"] == "model"
    assert (await http.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"rate_limit_rate": 1.0, "retry_after_s": 2}, 429, "rate_limit_exceeded"),
        ({"error_rate": 1.0}, 500, None),
        ({"context_window": 3}, 400, "context_length_exceeded"),
    ],
)
async def test_openai_errors(
    client: Callable[..., httpx.AsyncClient], fields: Json, status: int, code: str | None
) -> None:
    http = client(**fields)
    response = await http.post(
        "/v1/chat/completions", json={"model": "m", "messages": user("a b c d")}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == code
    if status == 429:
        assert response.headers["retry-after"] == "2"


async def test_bad_requests_are_openai_400s(client: Callable[..., httpx.AsyncClient]) -> None:
    http = client()
    not_json = await http.post("/v1/chat/completions", content=b"{nope")
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]["message"]
    no_model = await http.post("/v1/chat/completions", json={"messages": user("x")})
    assert (no_model.status_code, no_model.json()["error"]["param"]) == (400, "model")
    assert (await http.get("/v1/nothing")).json()["error"]["message"] == "Not Found"


async def test_outage_control_and_stats(client: Callable[..., httpx.AsyncClient]) -> None:
    http = client()
    request = {"model": "m", "messages": user("x")}
    assert (
        await http.post("/_sim/outage", json={"duration_s": 60, "status": 503})
    ).status_code == 200
    during = await http.post("/v1/chat/completions", json=request)
    assert during.status_code == 503 and int(during.headers["retry-after"]) > 0
    anthropic_during = await http.post("/v1/messages", json={**request, "max_tokens": 10})
    assert anthropic_during.json()["error"]["type"] == "api_error"
    assert (await http.delete("/_sim/outage")).status_code == 200
    assert (await http.post("/v1/chat/completions", json=request)).status_code == 200
    stats = (await http.get("/_sim/stats")).json()
    assert stats == {"requests": 3, "completed": 1, "errors": 2, "cancelled": 0, "in_flight": 0}
    bad = await http.post("/_sim/outage", json={"duration_s": -1})
    assert bad.status_code == 400 and "duration_s" in bad.json()["error"]["message"]
    assert (
        await http.post("/_sim/outage", json={"duration_s": 1, "every_s": 2})
    ).status_code == 400


# --- Anthropic --------------------------------------------------------------------------

TOOL = {
    "name": "lookup",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}


async def test_anthropic_message(client: Callable[..., httpx.AsyncClient]) -> None:
    http = client(default_answer="Bonjour.")
    body = {
        "model": "claude-test",
        "max_tokens": 50,
        "system": "Be kind.",
        "messages": user("hello"),
    }
    message = (await http.post("/v1/messages", json=body)).json()
    assert message["type"] == "message" and message["model"] == "claude-test"
    assert message["content"] == [{"type": "text", "text": "Bonjour."}]
    assert (message["stop_reason"], message["usage"]) == (
        "end_turn",
        {"input_tokens": 4, "output_tokens": 2},
    )


async def test_anthropic_stream_event_sequence(client: Callable[..., httpx.AsyncClient]) -> None:
    http = client(default_answer="Bonjour tout le monde.")
    body = {"model": "c", "max_tokens": 3, "messages": user("hello"), "stream": True}
    events = sse_events((await http.post("/v1/messages", json=body)).text)
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start"] + ["content_block_delta"] * 3 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    assert (
        "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
        == "Bonjour tout le"
    )
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2][1]["usage"] == {"output_tokens": 3}


async def test_anthropic_tool_use_streams_input_json(
    client: Callable[..., httpx.AsyncClient],
) -> None:
    http = client()
    body = {
        "model": "c",
        "max_tokens": 100,
        "messages": user("find cats"),
        "tools": [TOOL],
        "stream": True,
    }
    events = sse_events((await http.post("/v1/messages", json=body)).text)
    assert events[1][1]["content_block"]["type"] == "tool_use"
    partial = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta")
    assert orjson.loads(partial) == {"q": "find cats"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("fields", "status", "kind"),
    [
        ({"rate_limit_rate": 1.0}, 429, "rate_limit_error"),
        ({"error_rate": 1.0}, 529, "overloaded_error"),
        ({"context_window": 10}, 400, "invalid_request_error"),
    ],
)
async def test_anthropic_errors(
    client: Callable[..., httpx.AsyncClient], fields: Json, status: int, kind: str
) -> None:
    http = client(**fields)
    response = await http.post(
        "/v1/messages", json={"model": "c", "max_tokens": 20, "messages": user("x")}
    )
    assert response.status_code == status
    assert response.json() == {
        "type": "error",
        "error": {"type": kind, "message": response.json()["error"]["message"]},
    }
    if status == 429:
        assert "retry-after" in response.headers


# --- disconnects ----------------------------------------------------------------------


async def drive(
    app: ASGIApp, path: str, body: Json, disconnect_when: Callable[[Message], bool]
) -> list[Message]:
    """Call ``app`` directly; the client disconnects once ``disconnect_when(sent message)``."""
    sent: list[Message] = []
    gone = asyncio.Event()
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": orjson.dumps(body), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if disconnect_when(message):
            gone.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("sim", 80),
    }
    if disconnect_when({}):
        gone.set()
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    return sent


async def stats_of(app: ASGIApp) -> Json:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as http:
        return (await http.get("/_sim/stats")).json()


@pytest.mark.parametrize("fields", [{"latency": {"p50_ms": 60_000}}, {"timeout_rate": 1.0}])
async def test_disconnect_while_waiting_cancels_the_work(fields: Json) -> None:
    app = make_app(**fields)
    sent = await drive(
        app, "/v1/chat/completions", {"model": "m", "messages": user("x")}, lambda m: True
    )
    assert sent == []
    assert await stats_of(app) == {
        "requests": 1,
        "completed": 0,
        "errors": 0,
        "cancelled": 1,
        "in_flight": 0,
    }


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_disconnect_mid_stream_stops_the_stream(path: str) -> None:
    app = make_app(tokens_per_second=0.01, default_answer="a long answer that never finishes")
    body = {"model": "m", "max_tokens": 100, "messages": user("x"), "stream": True}
    sent = await drive(app, path, body, lambda m: m.get("type") == "http.response.body")
    assert sent[0]["status"] == 200
    assert [m["more_body"] for m in sent[1:]] == [True]
    assert (await stats_of(app))["cancelled"] == 1


# --- the official SDKs --------------------------------------------------------------------


@pytest.fixture
async def sdk_http() -> AsyncIterator[httpx2.AsyncClient]:
    app = make_app(seed=1, answers=[{"pattern": "(?i)capital of france", "answer": "Paris."}])
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://sim"
    ) as http:
        yield http


async def test_openai_sdk(sdk_http: httpx2.AsyncClient) -> None:
    sdk = openai.AsyncOpenAI(
        api_key="sk-test", base_url="http://sim/v1", http_client=sdk_http, max_retries=0
    )
    reply = await sdk.chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "Capital of France?"}]
    )
    assert (reply.model, reply.choices[0].message.content) == ("gpt-x", "Paris.")
    stream = await sdk.chat.completions.create(
        model="gpt-x",
        messages=[{"role": "user", "content": "Capital of France?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    embedded = await sdk.embeddings.create(model="emb", input=["a", "b"])  # base64 on the wire
    assert [len(d.embedding) for d in embedded.data] == [256, 256]
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "required": ["n"],
            },
        },
    }
    called = await sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "go"}], tools=[tool]
    )
    tool_calls = called.choices[0].message.tool_calls
    assert tool_calls is not None and tool_calls[0].function.arguments == '{"n":1}'


async def test_openai_sdk_sees_rate_limits(sdk_http: httpx2.AsyncClient) -> None:
    await sdk_http.post("/_sim/outage", json={"duration_s": 30, "status": 429})
    sdk = openai.AsyncOpenAI(
        api_key="sk-test", base_url="http://sim/v1", http_client=sdk_http, max_retries=0
    )
    with pytest.raises(openai.RateLimitError):
        await sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


async def test_anthropic_sdk(sdk_http: httpx2.AsyncClient) -> None:
    sdk = anthropic.AsyncAnthropic(
        api_key="sk-test", base_url="http://sim", http_client=sdk_http, max_retries=0
    )
    question = [{"role": "user", "content": "Capital of France?"}]
    message = await sdk.messages.create(model="claude-x", max_tokens=50, messages=question)
    assert message.content[0].type == "text" and message.content[0].text == "Paris."
    async with sdk.messages.stream(model="claude-x", max_tokens=50, messages=question) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[0].text == "Paris."
    assert (streamed.stop_reason, streamed.usage.output_tokens) == ("end_turn", 2)
    async with sdk.messages.stream(
        model="c", max_tokens=50, messages=question, tools=[TOOL]
    ) as stream:
        used = await stream.get_final_message()
    assert used.content[0].type == "tool_use" and used.content[0].input == {
        "q": "Capital of France?"
    }
    await sdk_http.post("/_sim/outage", json={"duration_s": 30, "status": 529})
    with pytest.raises(anthropic.OverloadedError):
        await sdk.messages.create(model="claude-x", max_tokens=50, messages=question)


# --- keel sim --------------------------------------------------------------------------------


def test_keel_sim_rejects_a_bad_config_with_the_field(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("latency: {p50_ms: 10, p99_ms: 5}\nerror_rat: 0.1\n")
    result = CliRunner().invoke(cli, ["sim", "-c", str(path)])
    assert result.exit_code == 2
    assert f"{path}: latency: p99_ms must be >= p50_ms" in result.output
    assert "error_rat: unknown key" in result.output


@pytest.mark.e2e
async def test_keel_sim_serves_over_http_and_counts_disconnects(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text(
        "kind: simulator\ntokens_per_second: 1\ndefault_answer: slow words keep coming here\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keel",
        "sim",
        "--port",
        "0",
        "-c",
        str(config),
        "--seed",
        "1",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
        assert line.startswith("keel sim listening on http://127.0.0.1:")
        url = line.split()[-1]
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            body = {"model": "m", "messages": user("x"), "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                first = await anext(response.aiter_bytes())
                assert first.startswith(b"data: ")
            # The server learns of the disconnect asynchronously; poll it, bounded.
            for _ in range(200):
                stats = (await http.get("/_sim/stats")).json()
                if stats["cancelled"]:
                    break
                await asyncio.sleep(0.025)
            assert stats["cancelled"] == 1 and stats["in_flight"] == 0
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)

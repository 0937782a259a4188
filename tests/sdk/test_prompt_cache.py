"""The SDK's edges, in-process: what a gateway rarely does, answered by ``httpx.MockTransport``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from sdk_support import TTL_S, Clock, greet

from keel.errors import InvalidRequest, KeelError
from keel.prompts import PromptFile, content_hash
from keel.sdk import (
    AsyncPromptClient,
    PromptAuthError,
    PromptClient,
    PromptError,
    PromptNotFound,
    PromptRequestError,
    PromptUnavailable,
)

KEY = "sk-keel-unit-test-secret-0123456789"
Handler = Callable[[httpx.Request], httpx.Response]


def served(version: str = "1.0.0", label: str | None = "production") -> httpx.Response:
    prompt = PromptFile.model_validate(greet(version))
    payload = {
        "name": "greet",
        "version": version,
        "content_hash": content_hash(prompt),
        "label": label,
        "prompt": prompt.model_dump(mode="json"),
    }
    return httpx.Response(200, content=orjson.dumps(payload))


def error(status: int, code: str, message: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "x", "code": code, "param": "name"}}
    return httpx.Response(status, content=orjson.dumps(body))


class Gateway:
    """Answers with whatever ``respond`` is set to, and remembers the requests."""

    def __init__(self) -> None:
        self.respond: Handler = lambda request: served()
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(gateway: Gateway, clock: Clock) -> Iterator[PromptClient]:
    with httpx.Client(transport=httpx.MockTransport(gateway)) as http:
        yield PromptClient(
            "http://gateway.test/v1/", KEY, ttl_s=TTL_S, http_client=http, clock=clock
        )


def down(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectTimeout("timed out", request=request)


def test_the_request_names_the_reference_and_carries_the_key(
    client: PromptClient, gateway: Gateway
) -> None:
    client.get("greet")
    gateway.respond = lambda request: served("1.0.1", label=None)
    client.get("greet", version="1.0.1")
    label, version = gateway.requests
    assert str(label.url) == "http://gateway.test/v1/prompts/greet?label=production"
    assert label.headers["authorization"] == f"Bearer {KEY}"
    assert str(version.url) == "http://gateway.test/v1/prompts/greet?version=1.0.1"


@pytest.mark.parametrize(
    "respond",
    [
        lambda request: error(503, "store_unavailable", "the key store is unavailable"),
        down,
        lambda request: httpx.Response(200, text="<html>proxy login</html>"),
        lambda request: httpx.Response(302, headers={"location": "/login"}),
    ],
    ids=["5xx", "timeout", "not-json", "redirect"],
)
def test_an_unusable_answer_serves_the_last_known_version(
    client: PromptClient, gateway: Gateway, clock: Clock, respond: Handler
) -> None:
    client.get("greet")
    gateway.respond = respond
    clock.advance(TTL_S)
    assert client.get("greet").stale
    with pytest.raises(PromptUnavailable) as e:
        client.get("greet", label="staging")
    assert e.value.retryable and isinstance(e.value, KeelError)


def test_a_5xx_with_nothing_known_names_the_prompt_and_the_gateways_words(
    client: PromptClient, gateway: Gateway
) -> None:
    gateway.respond = lambda request: error(503, "store_unavailable", f"no store for {KEY}")
    with pytest.raises(PromptUnavailable) as e:
        client.get("greet")
    assert e.value.status_code == 503
    assert "HTTP 503 store_unavailable: no store for sk-keel-…(redacted)" in str(e.value)
    assert KEY not in str(e.value)


@pytest.mark.parametrize(
    ("status", "code", "raised"),
    [
        (401, "invalid_api_key", PromptAuthError),
        (403, "permission_denied", PromptAuthError),
        (404, "not_found", PromptNotFound),
        (400, "invalid_request", PromptRequestError),
        (422, "something_new", PromptRequestError),
    ],
)
def test_a_4xx_is_raised_whatever_is_cached(
    client: PromptClient,
    gateway: Gateway,
    clock: Clock,
    status: int,
    code: str,
    raised: type[PromptError],
) -> None:
    client.get("greet")
    clock.advance(TTL_S)
    gateway.respond = lambda request: error(status, code, f"refused {KEY}")
    with pytest.raises(raised) as e:
        client.get("greet")
    assert e.value.status_code == status and e.value.prompt == "greet"
    assert f"greet (label production): the gateway answered {status} {code}" in str(e.value)
    assert KEY not in str(e.value)
    assert isinstance(e.value, KeelError) and not e.value.retryable


def test_an_answer_for_another_prompt_is_not_served(client: PromptClient, gateway: Gateway) -> None:
    with pytest.raises(
        PromptUnavailable, match=r"asked for greet \(version 2.0.0\), got greet 1.0.0"
    ):
        client.get("greet", version="2.0.0")  # the gateway answers 1.0.0


def test_a_label_or_a_version_not_both(client: PromptClient) -> None:
    with pytest.raises(InvalidRequest, match="not both"):
        client.get("greet", label="production", version="1.0.0")
    with pytest.raises(InvalidRequest, match="name is required"):
        client.reference("", {})
    assert client.reference("greet", {"who": "Ada"}, version="1.0.0") == {
        "prompt": {"name": "greet", "version": "1.0.0", "variables": {"who": "Ada"}}
    }


def test_reprs_hide_the_key(client: PromptClient) -> None:
    assert repr(client) == (
        "PromptClient(base_url='http://gateway.test', ttl_s=60.0, timeout_s=2.0)"
    )
    assert KEY not in repr(vars(client._cache))


def test_cache_dir_files_are_replaced_whole_and_a_bad_one_is_skipped(
    gateway: Gateway, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport = httpx.MockTransport(gateway)
    with httpx.Client(transport=transport) as http:
        first = PromptClient("http://gateway.test", KEY, http_client=http, cache_dir=tmp_path)
        first.get("greet")
        gateway.respond = lambda request: served("1.1.0")
        first.get("greet", label="staging")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "greet@label=production.json",
        "greet@label=staging.json",
        "greet@version=1.0.0.json",
        "greet@version=1.1.0.json",
    ]  # no temporary file left behind
    (tmp_path / "greet@label=staging.json").write_text('{"name": "greet", "vers')

    gateway.respond = down
    with httpx.Client(transport=transport) as http:
        second = PromptClient("http://gateway.test", KEY, http_client=http, cache_dir=tmp_path)
        assert second.get("greet").version == "1.0.0"
        with (
            caplog.at_level(logging.WARNING, logger="keel.sdk"),
            pytest.raises(PromptUnavailable),
        ):
            second.get("greet", label="staging")
    assert "could not read cached prompt greet (label staging)" in caplog.text


def test_an_unwritable_cache_dir_does_not_fail_a_fetch(
    client: PromptClient, gateway: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with httpx.Client(transport=httpx.MockTransport(gateway)) as http:
        client = PromptClient("http://gateway.test", KEY, http_client=http, cache_dir=blocker)
        with caplog.at_level(logging.WARNING, logger="keel.sdk"):
            assert client.get("greet").version == "1.0.0"
    assert "could not write prompt greet" in caplog.text


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        PromptClient("http://gateway.test", KEY, ttl_s=-1)


async def test_the_async_client_shares_the_policy(gateway: Gateway, clock: Clock) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(gateway)) as http:
        client = AsyncPromptClient(
            "http://gateway.test", KEY, ttl_s=TTL_S, http_client=http, clock=clock
        )
        fetched = await client.get("greet")
        assert await client.get("greet") is fetched
        gateway.respond = down
        clock.advance(TTL_S)
        assert (await client.get("greet")).stale
        gateway.respond = lambda request: error(404, "not_found", "gone")
        clock.advance(TTL_S)
        with pytest.raises(PromptNotFound):
            await client.get("greet")
        assert client.reference("greet", {}) == {
            "prompt": {"name": "greet", "label": "production", "variables": {}}
        }
    assert len(gateway.requests) == 3

"""``keel.sdk`` against a real gateway process: fetch, cache, fall back, fail clearly."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from sdk_support import TTL_S, Clock, Registry, Requests, files_in, greet

from keel.prompts import PromptFile, PromptVariablesInvalid
from keel.sdk import (
    AsyncPromptClient,
    PromptAuthError,
    PromptClient,
    PromptError,
    PromptNotFound,
    PromptUnavailable,
)

pytestmark = pytest.mark.e2e


@contextmanager
def client_for(
    registry: Registry, requests: Requests, clock: Clock, **options: Any
) -> Iterator[PromptClient]:
    """A client whose requests are counted and whose TTL runs on ``clock``."""
    with requests.client() as http:
        yield PromptClient(
            registry.url, registry.key, ttl_s=TTL_S, http_client=http, clock=clock, **options
        )


def test_fetches_by_label_and_by_version(registry: Registry) -> None:
    with PromptClient(f"{registry.url}/v1", registry.key) as client:
        by_label = client.get("greet")
        by_version = client.get("greet", version="1.0.0")
        explicit = client.get("greet", label="production")

    assert (by_label.name, by_label.version, by_label.label) == ("greet", "1.0.0", "production")
    assert by_label.content_hash.startswith("sha256:")
    assert isinstance(by_label.prompt, PromptFile) and by_label.prompt.model == "fast"
    assert not by_label.stale
    assert (by_version.version, by_version.label) == ("1.0.0", None)
    assert by_version.content_hash == by_label.content_hash == explicit.content_hash


def test_a_label_is_cached_for_its_ttl_and_a_version_for_good(registry: Registry) -> None:
    requests, clock = Requests(), Clock()
    with client_for(registry, requests, clock) as client:
        first = client.get("greet")
        assert client.get("greet") is first
        # The label's answer also fills its exact version, which never changes.
        assert client.get("greet", version="1.0.0").version == "1.0.0"
        assert len(requests) == 1

        clock.advance(TTL_S - 0.001)
        client.get("greet")
        assert len(requests) == 1
        clock.advance(0.001)
        client.get("greet")
        assert len(requests) == 2

        clock.advance(1e9)
        client.get("greet", version="1.0.0")
        assert len(requests) == 2


def test_a_label_move_is_seen_once_the_ttl_has_passed(registry: Registry) -> None:
    registry.push(greet("1.1.0", greeting="Hi"))
    requests, clock = Requests(), Clock()
    with client_for(registry, requests, clock) as client:
        assert client.get("greet").version == "1.0.0"
        registry.promote("greet", "1.1.0")
        registry.restart()  # the restarted gateway serves the move at once

        clock.advance(TTL_S / 2)
        assert client.get("greet").version == "1.0.0"  # still within the TTL: not asked
        assert len(requests) == 1
        clock.advance(TTL_S / 2)
        moved = client.get("greet")
        assert (moved.version, moved.stale) == ("1.1.0", False)
        assert client.render("greet", {"who": "Ada"})[0]["content"].startswith("Hi Ada")


def test_a_stopped_gateway_serves_the_last_known_version_stale(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    requests, clock = Requests(), Clock()
    with client_for(registry, requests, clock, retry_s=5.0) as client:
        fresh = client.get("greet")
        registry.stop()
        clock.advance(TTL_S)
        with caplog.at_level(logging.INFO, logger="keel.sdk"):
            stale = client.get("greet")
            assert stale.stale and stale.version == "1.0.0"
            assert stale.fetched_at == fresh.fetched_at
            assert client.get("greet").stale  # within retry_s: not asked again
            assert len(requests) == 2
            clock.advance(5.0)
            assert client.get("greet").stale  # asked again, still down
            assert len(requests) == 3

            registry.restart()
            clock.advance(5.0)
            assert not client.get("greet").stale
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "one warning per outage"
        assert "unreachable" in warnings[0].getMessage()
        assert any("answers again" in r.getMessage() for r in caplog.records)


def test_nothing_known_and_the_gateway_down_is_prompt_unavailable(registry: Registry) -> None:
    registry.stop()
    with PromptClient(registry.url, registry.key) as client, pytest.raises(PromptUnavailable) as e:
        client.get("greet")
    assert isinstance(e.value, PromptError)
    assert e.value.prompt == "greet" and "ConnectError" in e.value.cause
    assert "prompt greet (label production) is unavailable" in str(e.value)
    assert registry.url in str(e.value)


def test_a_404_is_raised_even_with_another_reference_cached(registry: Registry) -> None:
    requests, clock = Requests(), Clock()
    with client_for(registry, requests, clock) as client:
        client.get("greet")
        for name, ref in [
            ("nope", {}),
            ("greet", {"label": "staging"}),
            ("greet", {"version": "9.9.9"}),
        ]:
            with pytest.raises(PromptNotFound) as e:
                client.get(name, **ref)
            assert e.value.status_code == 404 and e.value.prompt == name
            assert "404 not_found" in str(e.value)


def test_cache_dir_serves_a_new_client_while_the_gateway_is_down(
    registry: Registry, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "prompt-cache"
    with PromptClient(registry.url, registry.key, cache_dir=cache_dir) as client:
        fetched = client.get("greet")  # writes the label's answer and its version
    assert files_in(cache_dir) == ["greet@label=production.json", "greet@version=1.0.0.json"]
    registry.stop()

    with PromptClient(registry.url, registry.key, cache_dir=cache_dir) as restarted:
        served = restarted.get("greet")
        assert served.stale and served.version == "1.0.0"
        assert served.content_hash == fetched.content_hash
        assert served.prompt == fetched.prompt
        assert restarted.get("greet", version="1.0.0").content_hash == fetched.content_hash
        with pytest.raises(PromptUnavailable, match="or in cache_dir"):
            restarted.get("greet", label="staging")
    assert files_in(cache_dir) == ["greet@label=production.json", "greet@version=1.0.0.json"]


def test_the_api_key_appears_in_no_error_log_or_repr(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache_dir = tmp_path / "prompt-cache"
    wrong = registry.key[:-4] + "XXXX"
    seen: list[BaseException] = []
    with caplog.at_level(logging.DEBUG):
        with PromptClient(registry.url, wrong) as client:
            with pytest.raises(PromptAuthError) as auth:
                client.get("greet")
            assert auth.value.status_code == 401
            seen.append(auth.value)
            shown = [repr(client)]
        with PromptClient(registry.url, registry.key, cache_dir=cache_dir) as client:
            client.get("greet")
            shown += [repr(client), repr(vars(client)), repr(vars(client._cache))]
            with pytest.raises(PromptNotFound) as missing:
                client.get("nope")
            seen.append(missing.value)
            registry.stop()
            with pytest.raises(PromptUnavailable) as down:
                client.get("greet", version="2.0.0")
            seen.append(down.value)

    for error in seen:
        chain: BaseException | None = error
        while chain is not None:
            shown += [str(chain), repr(chain), repr(chain.args)]
            chain = chain.__cause__ or chain.__context__
    shown.append(caplog.text)
    shown += [p.read_text() for p in cache_dir.iterdir()]
    for key in (registry.key, wrong):
        assert not [text for text in shown if key in text]
        assert not [text for text in shown if key.removeprefix("sk-keel-") in text]


def test_render_locally_or_let_the_gateway_render_the_reference(registry: Registry) -> None:
    with PromptClient(registry.url, registry.key) as client:
        messages = client.render("greet", {"who": "Ada", "language": "French"})
        with pytest.raises(PromptVariablesInvalid, match=r"prompt\.variables\.language"):
            client.render("greet", {"who": "Ada", "language": "Klingon"})
        reference = client.reference("greet", {"who": "Ada"})
    assert messages == [
        {"role": "system", "content": "Hello Ada, answer in French."},
        {"role": "user", "content": "Say hi to Ada."},
    ]
    assert reference == {
        "prompt": {"name": "greet", "label": "production", "variables": {"who": "Ada"}}
    }

    sdk = openai.OpenAI(base_url=f"{registry.url}/v1", api_key=registry.key, max_retries=0)
    with sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="fast", messages=[], extra_body=reference
        )
    assert raw.headers["x-keel-prompt-version"] == "1.0.0"
    assert raw.parse().choices[0].message.content


async def test_the_async_client_behaves_the_same(registry: Registry, tmp_path: Path) -> None:
    requests, clock = Requests(), Clock()
    async with requests.async_client() as http:
        client = AsyncPromptClient(
            registry.url, registry.key, ttl_s=TTL_S, http_client=http, clock=clock
        )
        fetched = await client.get("greet")
        assert (await client.get("greet")) is fetched and len(requests) == 1
        assert (await client.render("greet", {"who": "Bo"}))[1]["content"] == "Say hi to Bo."
        with pytest.raises(PromptNotFound):
            await client.get("nope")

        registry.stop()
        clock.advance(TTL_S)
        stale = await client.get("greet")
        assert stale.stale and stale.version == "1.0.0"
        with pytest.raises(PromptUnavailable):
            await client.get("greet", label="staging")


async def test_the_async_client_owns_and_closes_its_http_client(registry: Registry) -> None:
    async with AsyncPromptClient(registry.url, registry.key) as client:
        assert (await client.get("greet", version="1.0.0")).label is None
    assert client._http.is_closed

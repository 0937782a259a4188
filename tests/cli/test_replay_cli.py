"""``keel replay``: the stored request again, through the in-process gateway."""

from __future__ import annotations

import json
from collections.abc import Callable

from cli_support import Invoke, failed_over, make_record, one_error_line

from keel.config import load_config
from keel.store import KeyRecord, KeyStore, RequestStore, TraceFilter, make_engine


def _replay_keys(keel_yaml: str) -> list[KeyRecord]:
    engine = make_engine(load_config(keel_yaml).database_url)
    try:
        return [k for k in KeyStore(engine).list_keys() if k.name == "replay"]
    finally:
        engine.dispose()


def test_replay_shows_both_answers(
    keel: Invoke, write: Callable[..., None], keel_yaml: str, store: RequestStore
) -> None:
    write(make_record("req-1"))
    result = keel("replay", "req-1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "original" in out and "replay" in out
    assert "stored answer" in out and "fresh answer" in out
    assert "$0.1400" in out  # the original's cost
    assert out.count("sim/model-a") == 2
    # The temporary key is revoked once the replay is done.
    (key,) = _replay_keys(keel_yaml)
    assert key.tenant == "acme" and key.revoked_at is not None
    # The replay is itself recorded, tagged with what it replays.
    replays = [r for r in store.list_requests(TraceFilter(), limit=10) if r.request_id != "req-1"]
    assert len(replays) == 1 and replays[0].tenant == "acme"
    assert replays[0].detail["metadata"]["replay_of"] == "req-1"


def test_replay_json_compares_tokens_cost_and_latency(
    keel: Invoke, write: Callable[..., None]
) -> None:
    write(make_record("req-1"))
    result = keel("replay", "req-1", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    old, new = data["original"], data["replay"]
    assert old["answer"] == "stored answer" and old["cost_usd"] == 0.14
    assert new["answer"] == "fresh answer" and new["http_status"] == 200
    assert new["deployment"] == "sim/model-a"
    assert new["input_tokens"] > 0 and new["output_tokens"] > 0
    assert new["cost_usd"] is not None and new["cost_usd"] > 0  # model-a has a price
    assert new["latency_ms"] > 0 and new["request_id"] != "req-1"


def test_model_override_and_stream_replayed_without_streaming(
    keel: Invoke, write: Callable[..., None]
) -> None:
    body = {
        "model": "fast",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    write(make_record("req-s", stream=True, request_body=body))
    result = keel("replay", "req-s", "--model", "smart", "--format", "json")
    assert result.exit_code == 0, result.output
    new = json.loads(result.stdout)["replay"]
    assert new["deployment"] == "sim/model-b"
    assert new["answer"] == "fresh answer"
    assert new["cost_usd"] is None  # model-b has no price: unknown, not $0
    text = keel("replay", "req-s").stdout
    assert "replayed without streaming" in text


def test_refuses_a_request_without_captured_content(
    keel: Invoke, write: Callable[..., None], keel_yaml: str
) -> None:
    write(failed_over("req-x"))
    line = one_error_line(keel("replay", "req-x"))
    assert "content capture was off" in line
    assert _replay_keys(keel_yaml) == []  # refused before any key was made


def test_prompt_version_waits_for_the_registry(keel: Invoke, write: Callable[..., None]) -> None:
    write(make_record("req-1"))
    line = one_error_line(keel("replay", "req-1", "--prompt-version", "4"))
    assert "--prompt-version" in line and "prompt registry" in line


def test_missing_request(keel: Invoke) -> None:
    assert "no stored request 'nope'" in one_error_line(keel("replay", "nope"))


def test_a_failed_replay_exits_1_and_still_shows_it(
    keel: Invoke, write: Callable[..., None]
) -> None:
    write(make_record("req-1"))
    result = keel("replay", "req-1", "--model", "no-such-alias")
    assert result.exit_code == 1
    assert "404" in result.stdout and "stored answer" in result.stdout

"""Prompts end to end: push, promote and roll back with the CLI while two real
gateways serve them to the official OpenAI SDK."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
import yaml

from e2e_support import Cluster, Process

pytestmark = pytest.mark.e2e

CONFIG = {
    "providers": {"sim": {"kind": "simulator", "seed": 11}},
    "models": [{"alias": "fast", "deployments": [{"provider": "sim", "model": "small"}]}],
    "telemetry": {"log": {"destination": "off"}},
}


def write_prompt(folder: Path, version: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    prompt = {
        "name": "greet",
        "version": version,
        "model": "fast",
        "params": {"max_tokens": 20},
        "messages": [{"role": "user", "content": text}],
        "variables": {"who": {"type": "string"}},
    }
    (folder / "greet.yaml").write_text(yaml.safe_dump(prompt))


def publish(cluster: Cluster, folder: Path, version: str) -> None:
    for args in (
        ("prompts", "push", str(folder)),
        ("prompts", "promote", "greet", version, "--force", "--reason", "e2e"),
    ):
        done = cluster.keel(*args)
        assert done.returncode == 0, done.stderr


def served(gateway: Process, key: str) -> str | None:
    """The version the gateway renders for the production label (None: no label yet)."""
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=10)
    try:
        with client:
            response = client.chat.completions.with_raw_response.create(
                model="fast",
                messages=[],
                extra_body={"prompt": {"name": "greet", "variables": {"who": "Ada"}}},
            )
    except openai.NotFoundError:
        return None
    assert response.parse().choices[0].message.content
    return response.headers["x-keel-prompt-version"]


def until_served(gateways: list[Process], key: str, version: str) -> float:
    """Seconds until every gateway serves ``version``; gives up after 10 s."""
    started = time.monotonic()
    pending = list(gateways)
    while pending and time.monotonic() - started < 10:
        pending = [g for g in pending if served(g, key) != version]
    assert not pending, f"still not serving {version}"
    return time.monotonic() - started


def test_a_rollback_reaches_both_gateways_within_five_seconds(
    cluster: Cluster, tmp_path: Path
) -> None:
    folder = tmp_path / "prompts"
    write_prompt(folder, "1.0.0", "Greet {{ who }} warmly.")
    gateways, key = cluster.gateways(CONFIG, 2)
    publish(cluster, folder, "1.0.0")
    assert until_served(gateways, key, "1.0.0") <= 5
    write_prompt(folder, "1.1.0", "Greet {{ who }} in French.")
    publish(cluster, folder, "1.1.0")
    assert until_served(gateways, key, "1.1.0") <= 5
    rolled = cluster.keel("prompts", "rollback", "greet", "--reason", "bad answers")
    assert rolled.returncode == 0, rolled.stderr
    took = until_served(gateways, key, "1.0.0")
    assert took <= 5, f"the rollback took {took:.1f} s to reach both gateways"
    history = cluster.keel("prompts", "history", "greet", "--format", "json")
    assert "bad answers" in history.stdout


def test_messages_may_be_empty_only_with_a_prompt(cluster: Cluster, tmp_path: Path) -> None:
    (gateway,), key = cluster.gateways(CONFIG, 1)
    client = cluster.closing(
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=10)
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fast", messages=[])
    assert caught.value.code == "invalid_request"

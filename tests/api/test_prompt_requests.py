"""Chat requests that name a registry prompt: rendering, params, errors, labels, telemetry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from keel.config import KeelConfig
from keel.prompts import MessageTemplate, PromptFile, VariableSpec
from keel.store import PromptRegistry, record_eval_run
from support import Gateway, gateway_config, open_gateway


def config(tmp_path: Path) -> KeelConfig:
    return gateway_config(
        tmp_path,
        {
            "providers": {"sim": {"kind": "simulator", "seed": 3}},
            "models": [
                {"alias": "fast", "deployments": [{"provider": "sim", "model": "small"}]},
                {"alias": "smart", "deployments": [{"provider": "sim", "model": "large"}]},
            ],
            "telemetry": {"log": {"destination": "off"}},
        },
    )


def greeting(version: str, text: str = "Greet {{ who }} warmly.", **extra: Any) -> PromptFile:
    return PromptFile(
        name="greet",
        version=version,
        model="fast",
        params={"temperature": 0.3, "max_tokens": 50},
        overridable=["temperature"],
        messages=[
            MessageTemplate(role="system", content="You are polite."),
            MessageTemplate(role="user", content=text),
        ],
        variables={"who": VariableSpec(type="string", max_length=20)},
        **extra,
    )


def publish(gw: Gateway, *prompts: PromptFile, label: str = "production") -> None:
    registry = PromptRegistry(gw.state.engine)
    registry.push(prompts, actor="test")
    for prompt in prompts:
        record_eval_run(
            gw.state.engine,
            suite="smoke",
            prompt_name=prompt.name,
            prompt_version=prompt.version,
            dataset_hash="sha256:0",
            passed=True,
        )
        registry.promote(prompt.name, prompt.version, label, actor="test")


async def ask(gw: Gateway, prompt: dict[str, Any], **body: Any) -> httpx.Response:
    return await gw.chat({"prompt": prompt, **body})


def error(response: httpx.Response) -> dict[str, Any]:
    found: dict[str, Any] = response.json()["error"]
    return found


async def test_a_prompt_by_label_is_rendered_with_its_model_and_params(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        publish(gw, greeting("1.0.0"))
        await gw.state.prompts.refresh()
        answer = await ask(gw, {"name": "greet", "variables": {"who": "Ada"}})
        gw.state.writer.flush()
        stored = gw.state.requests.get(answer.headers["x-request-id"], tenant="acme")
    assert answer.status_code == 200
    assert answer.headers["x-keel-prompt"] == "greet"
    assert answer.headers["x-keel-prompt-version"] == "1.0.0"
    assert answer.headers["x-keel-model"] == "sim/small"
    assert stored is not None
    assert (stored.prompt_name, stored.prompt_version) == ("greet", "1.0.0")
    assert stored.prompt_hash == PromptRegistry(gw.state.engine).get("greet", "1.0.0").content_hash
    sent = stored.content["request_body"]
    assert sent["messages"][1] == {"role": "user", "content": "Greet Ada warmly."}
    assert (sent["model"], sent["max_tokens"], sent["temperature"]) == ("fast", 50, 0.3)


async def test_request_messages_follow_the_prompts_and_allowed_params_override(
    tmp_path: Path,
) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        publish(gw, greeting("1.0.0"))
        await gw.state.prompts.refresh()
        answer = await ask(
            gw,
            {"name": "greet", "variables": {"who": "Ada"}},
            messages=[{"role": "user", "content": "And say goodbye."}],
            temperature=0.9,
        )
        gw.state.writer.flush()
        stored = gw.state.requests.get(answer.headers["x-request-id"], tenant="acme")
    assert answer.status_code == 200
    assert stored is not None
    sent = stored.content["request_body"]
    assert [m["content"] for m in sent["messages"]][-2:] == [
        "Greet Ada warmly.",
        "And say goodbye.",
    ]
    assert sent["temperature"] == 0.9


async def test_params_the_prompt_owns_cannot_be_overridden(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        publish(gw, greeting("1.0.0"))
        await gw.state.prompts.refresh()
        max_tokens = await ask(gw, {"name": "greet", "variables": {"who": "Ada"}}, max_tokens=9)
        model = await ask(gw, {"name": "greet", "variables": {"who": "Ada"}}, model="smart")
        same_model = await ask(gw, {"name": "greet", "variables": {"who": "Ada"}}, model="fast")
    assert max_tokens.status_code == 400 and error(max_tokens)["param"] == "max_tokens"
    assert model.status_code == 400 and error(model)["param"] == "model"
    assert 'uses model "fast"' in error(model)["message"]
    assert same_model.status_code == 200


async def test_bad_variables_are_422_naming_the_variable(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        publish(gw, greeting("1.0.0"))
        await gw.state.prompts.refresh()
        too_long = await ask(gw, {"name": "greet", "variables": {"who": "A" * 21}})
        missing = await ask(gw, {"name": "greet", "variables": {}})
        unknown = await ask(gw, {"name": "greet", "variables": {"who": "Ada", "age": 3}})
    for response in (too_long, missing, unknown):
        assert response.status_code == 422
        assert error(response)["code"] == "prompt_variables_invalid"
    assert error(too_long)["param"] == "prompt.variables.who"
    assert "at most 20" in error(too_long)["message"]
    assert error(missing)["param"] == "prompt.variables.who"
    assert "age" in error(unknown)["message"]


async def test_unknown_prompts_labels_and_versions_are_404_naming_the_field(
    tmp_path: Path,
) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        publish(gw, greeting("1.0.0"))
        await gw.state.prompts.refresh()
        name = await ask(gw, {"name": "nope", "variables": {}})
        label = await ask(gw, {"name": "greet", "label": "canary", "variables": {"who": "A"}})
        version = await ask(gw, {"name": "greet", "version": "9.9.9", "variables": {"who": "A"}})
        both = await ask(gw, {"name": "greet", "label": "x", "version": "1.0.0"})
        neither = await gw.chat({"model": "fast"})
    assert (name.status_code, error(name)["param"]) == (404, "prompt.name")
    assert (label.status_code, error(label)["param"]) == (404, "prompt.label")
    assert (version.status_code, error(version)["param"]) == (404, "prompt.version")
    assert (both.status_code, error(both)["param"]) == (400, "prompt.version")
    assert (neither.status_code, error(neither)["param"]) == (400, "messages")


async def test_a_pinned_version_and_a_rollback_change_what_is_served(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        publish(gw, greeting("1.0.0"))
        publish(gw, greeting("1.1.0", text="Greet {{ who }} briefly."))
        await gw.state.prompts.refresh()
        ref = {"name": "greet", "variables": {"who": "Ada"}}
        latest = await ask(gw, ref)
        pinned = await ask(gw, {**ref, "version": "1.0.0"})
        PromptRegistry(gw.state.engine).rollback("greet", "production", actor="test")
        await gw.state.prompts.refresh()
        rolled_back = await ask(gw, ref)
    assert latest.headers["x-keel-prompt-version"] == "1.1.0"
    assert pinned.headers["x-keel-prompt-version"] == "1.0.0"
    assert rolled_back.headers["x-keel-prompt-version"] == "1.0.0"


async def test_sdks_read_what_a_label_serves(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        publish(gw, greeting("1.0.0"))
        await gw.state.prompts.refresh()
        found = await gw.client.get("/v1/prompts/greet", headers=gw.auth)
        pinned = await gw.client.get("/v1/prompts/greet?version=1.0.0", headers=gw.auth)
        missing = await gw.client.get("/v1/prompts/greet?label=canary", headers=gw.auth)
        anonymous = await gw.client.get("/v1/prompts/greet")
    assert found.status_code == 200
    assert (found.json()["version"], found.json()["label"]) == ("1.0.0", "production")
    assert found.json()["prompt"]["messages"][1]["content"] == "Greet {{ who }} warmly."
    assert pinned.json()["version"] == "1.0.0"
    assert missing.status_code == 404
    assert anonymous.status_code == 401

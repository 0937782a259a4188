"""``keel replay``: run a stored request through the gateway again, in-process.

The replay goes through the whole pipeline (auth, routing, retries,
fallbacks, pricing, telemetry) exactly as a client's request would, as the
original tenant, so its answer, cost and latency compare like for like with
the original's. It is recorded like any other request, tagged
``metadata.replay_of``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from keel.cli._base import config_option, dumps, format_usd, open_database
from keel.errors import InvalidRequest, KeelError, NotFound

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.table import Table

    from keel.config import KeelConfig
    from keel.store import StoredRequest

# The temporary key outlives a replay only if the process dies before revoking it.
_KEY_LIFETIME = timedelta(minutes=15)
_PATHS = {"chat": "/v1/chat/completions", "embeddings": "/v1/embeddings"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One side of the comparison: what a run of the request gave."""

    request_id: str | None
    deployment: str | None
    http_status: int
    answer: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None  # None: unknown price
    latency_ms: float


@click.command("replay")
@click.argument("request_id")
@click.option("--model", default=None, metavar="ALIAS", help="Send to this alias instead.")
@click.option(
    "--prompt-version",
    default=None,
    help="Replay with another prompt version (arrives with the prompt registry).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@config_option
def replay(
    request_id: str, model: str | None, prompt_version: str | None, fmt: str, config_path: str
) -> None:
    """Re-run REQUEST_ID through the gateway and compare the answers.

    Needs the request's captured content (telemetry.capture_content).
    Streaming requests are replayed without streaming.
    """
    if prompt_version is not None:
        raise InvalidRequest(
            "--prompt-version: prompt versions arrive with the prompt registry;"
            " replay without it to reuse the stored prompt",
            param="prompt_version",
        )
    from keel.store import KeyStore, RequestStore

    with open_database(config_path) as (config, engine):
        stored = RequestStore(engine).get(request_id, tenant=None)
        if stored is None:
            raise NotFound(f"no stored request {request_id!r}", param="request_id")
        body = replay_body(stored, model)
        tenant = _tenant(stored)
        keys = KeyStore(engine)
        key, record = keys.create_key(
            tenant, name="replay", expires_at=datetime.now(UTC) + _KEY_LIFETIME
        )
        try:
            import asyncio

            new = asyncio.run(_run(_quiet(config), stored.operation, body, key))
        finally:
            keys.revoke(record.id)
    old = original(stored)
    if fmt == "json":
        click.echo(dumps({"original": asdict(old), "replay": asdict(new)}))
    else:
        from rich.console import Console

        Console(highlight=False).print(_compare(old, new, stored.stream))
    if new.http_status >= 400:
        raise click.exceptions.Exit(1)


def replay_body(stored: StoredRequest, model: str | None) -> dict[str, Any]:
    """The captured request body, made ready to send again."""
    content = stored.content or {}
    captured = content.get("request_body")
    if not isinstance(captured, dict):
        raise InvalidRequest(
            f"request {stored.request_id!r} cannot be replayed: content capture was off"
            " for it (telemetry.capture_content), so its request body was not stored",
            param="request_id",
        )
    body = dict(captured)
    if stored.operation == "chat":
        # A non-streaming answer carries its usage and cost header, which a
        # side-by-side comparison needs; the tokens are the same either way.
        body["stream"] = False
        body.pop("stream_options", None)
    if model is not None:
        body["model"] = model
    metadata = body.get("metadata")
    body["metadata"] = {
        **(metadata if isinstance(metadata, dict) else {}),
        "replay_of": stored.request_id,
    }
    return body


def _tenant(stored: StoredRequest) -> str:
    if not stored.tenant:
        raise InvalidRequest(
            f"request {stored.request_id!r} has no tenant (it failed authentication),"
            " so there is no one to replay it as",
            param="request_id",
        )
    return stored.tenant


def _quiet(config: KeelConfig) -> KeelConfig:
    """The config with the request log off: its stdout lines would mix with our output."""
    from keel.config import LogConfig

    telemetry = config.telemetry.model_copy(update={"log": LogConfig(destination="off")})
    return config.model_copy(update={"telemetry": telemetry})


async def _run(config: KeelConfig, operation: str, body: dict[str, Any], key: str) -> Outcome:
    """Send ``body`` through a gateway app built and started in this process."""
    try:
        import httpx
    except ImportError:  # a test-extra dependency; say what to install
        raise KeelError("keel replay needs httpx: pip install httpx") from None
    from keel.api import create_app

    app = create_app(config)
    # What a server does: run the lifespan, hand its state to every request.
    async with app.control.router.lifespan_context(app.control) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
            started = time.perf_counter()
            response = await client.post(
                _PATHS.get(operation, _PATHS["chat"]),
                json=body,
                headers={"authorization": f"Bearer {key}"},
            )
            latency_ms = (time.perf_counter() - started) * 1000
    try:
        payload = response.json()
    except ValueError:  # not JSON: nothing to read but the status
        payload = None
    return _outcome(response.status_code, dict(response.headers), payload, latency_ms)


def _outcome(status: int, headers: dict[str, str], payload: Any, latency_ms: float) -> Outcome:
    payload = payload if isinstance(payload, dict) else {}
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
    cost = headers.get("x-keel-cost-usd")
    return Outcome(
        request_id=headers.get("x-request-id"),
        deployment=headers.get("x-keel-model"),
        http_status=status,
        answer=_answer(payload),
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        cost_usd=None if cost in (None, "unknown") else float(cost),
        latency_ms=latency_ms,
    )


def _answer(payload: dict[str, Any]) -> str | None:
    if isinstance(payload.get("error"), dict):
        return f"error: {payload['error'].get('message')}"
    choices = payload.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or {}
        if message.get("content") is not None:
            return str(message["content"])
        return dumps(message.get("tool_calls")) if message.get("tool_calls") else None
    data = payload.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return f"{len(data)} embedding(s) of {len(data[0].get('embedding') or [])} dimensions"
    return None


def original(stored: StoredRequest) -> Outcome:
    content = stored.content or {}
    return Outcome(
        request_id=stored.request_id,
        deployment=stored.deployment,
        http_status=stored.http_status,
        answer=content.get("response_text"),
        input_tokens=stored.input_tokens,
        output_tokens=stored.output_tokens,
        cost_usd=stored.cost_usd,
        latency_ms=stored.latency_ms,
    )


def _compare(old: Outcome, new: Outcome, was_stream: bool) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=True, caption="replayed without streaming" if was_stream else None)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("original", overflow="fold", ratio=1)
    table.add_column("replay", overflow="fold", ratio=1)

    def tokens(o: Outcome) -> str:
        if o.input_tokens is None and o.output_tokens is None:
            return "-"
        return f"{o.input_tokens or 0:,} in / {o.output_tokens or 0:,} out"

    def cost(o: Outcome) -> str:
        return "unknown" if o.cost_usd is None else format_usd(o.cost_usd)

    rows: dict[str, Callable[[Outcome], str]] = {
        "request": lambda o: o.request_id or "-",
        "deployment": lambda o: o.deployment or "-",
        "status": lambda o: str(o.http_status),
        "tokens": tokens,
        "cost": cost,
        "latency": lambda o: f"{o.latency_ms:,.0f} ms",
    }
    for name, cell in rows.items():
        table.add_row(name, cell(old), cell(new))
    # Text, not markup: answers are model output and may contain [brackets].
    table.add_row(
        "answer",
        Text(old.answer if old.answer is not None else "(not captured)"),
        Text(new.answer if new.answer is not None else "-"),
    )
    return table

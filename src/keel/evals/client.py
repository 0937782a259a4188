"""Gateway clients for evals: over HTTP to a running gateway, or the real app in-process.

Both go through the whole pipeline production traffic takes (auth, prompt
rendering, routing, retries, pricing, telemetry), so a suite scores what
users would get, and its calls are traced and costed like any other.
Transient failures (429, 5xx, connection errors, timeouts) are retried with
exponential backoff up to ``retries`` times; anything else fails at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from keel.evals.base import CallResult

if TYPE_CHECKING:
    from keel.config import KeelConfig

__all__ = [
    "CallError",
    "HttpGatewayClient",
    "InProcessGatewayClient",
    "ServedPrompt",
]

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})
_MAX_BACKOFF_S = 10.0
# The temporary key of an in-process run outlives it only if the process dies.
_KEY_LIFETIME = timedelta(hours=6)


class CallError(Exception):
    """A call that failed for good: refused, or still failing after the retries."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUS


@dataclass(frozen=True, slots=True)
class ServedPrompt:
    """What ``GET /v1/prompts/{name}`` said a label or version serves."""

    name: str
    version: str
    content_hash: str


def _error_of(response: httpx.Response) -> CallError:
    code: str | None = None
    message = response.text[:500]
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = str(error.get("message") or message)
    label = f"{response.status_code} {code}" if code else str(response.status_code)
    return CallError(f"{label}: {message}", status=response.status_code, code=code)


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


def _call_result(response: httpx.Response, latency_ms: float) -> CallResult:
    try:
        body = response.json()
    except ValueError:
        raise CallError("the gateway answered with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise CallError("the gateway answered with a body that is not a JSON object")
    text = ""
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            text = message["content"]
    usage = body.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    cost = response.headers.get("x-keel-cost-usd")
    return CallResult(
        text=text,
        response=body,
        latency_ms=latency_ms,
        cost_usd=None if cost in (None, "unknown") else float(cost),
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        request_id=response.headers.get("x-request-id"),
        prompt_version=response.headers.get("x-keel-prompt-version"),
    )


class HttpGatewayClient:
    """A ``GatewayClient`` on a gateway's OpenAI-compatible API. Use as ``async with``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retries: int = 2,
        timeout_s: float = 120.0,
        backoff_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self.backoff_s = backoff_s
        self._base_url = base_url.rstrip("/")
        self._headers = {"authorization": f"Bearer {api_key}"}
        self._timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.calls = 0  # HTTP requests sent, retries included

    def _open(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
            self._client = httpx.AsyncClient(
                base_url=self._base_url,
                headers=self._headers,
                timeout=self._timeout_s,
                transport=self._transport,
                limits=limits,
            )
        return self._client

    async def __aenter__(self) -> HttpGatewayClient:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _send(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None
    ) -> tuple[httpx.Response, float]:
        """Send with retries on transient failures; the response and its latency in ms."""
        client = self._open()
        attempt = 0
        while True:
            self.calls += 1
            response: httpx.Response | None = None
            started = time.perf_counter()
            try:
                response = await client.request(method, path, json=json, params=params)
                latency_ms = (time.perf_counter() - started) * 1000
                if response.status_code < 400:
                    return response, latency_ms
                error = _error_of(response)
            except httpx.TransportError as exc:
                error = CallError(f"cannot reach the gateway at {self._base_url}: {exc!r}")
            if not error.retryable or attempt >= self.retries:
                if attempt:
                    error.message = f"{error.message} (after {attempt + 1} attempts)"
                    error.args = (error.message,)
                raise error
            wait = _retry_after(response)
            if wait is None:
                wait = self.backoff_s * (2**attempt) * (0.5 + random.random())
            await asyncio.sleep(min(wait, _MAX_BACKOFF_S))
            attempt += 1

    async def chat(self, body: Mapping[str, Any]) -> CallResult:
        response, latency_ms = await self._send("POST", "/v1/chat/completions", json=dict(body))
        return _call_result(response, latency_ms)

    async def embed(self, alias: str, texts: Sequence[str]) -> list[list[float]]:
        response, _ = await self._send(
            "POST", "/v1/embeddings", json={"model": alias, "input": list(texts)}
        )
        data = response.json().get("data")
        if not isinstance(data, list):
            raise CallError("the gateway's embeddings answer has no data list")
        ordered = sorted(data, key=lambda item: int(item.get("index", 0)))
        return [[float(x) for x in item["embedding"]] for item in ordered]

    async def check(self) -> None:
        """Fail with ``CallError`` unless the gateway answers and accepts the key."""
        await self._send("GET", "/v1/models")

    async def prompt(
        self, name: str, *, label: str | None = None, version: str | None = None
    ) -> ServedPrompt | None:
        """The version a label (or an exact version) serves; None when there is none."""
        params = {"label": label} if label is not None else {"version": version or ""}
        try:
            response, _ = await self._send("GET", f"/v1/prompts/{name}", params=params)
        except CallError as error:
            if error.status == 404:
                return None
            raise
        payload = response.json()
        return ServedPrompt(
            name=str(payload["name"]),
            version=str(payload["version"]),
            content_hash=str(payload["content_hash"]),
        )


class InProcessGatewayClient(HttpGatewayClient):
    """The real Keel app built from ``config`` and run in this process (httpx ASGI transport).

    On enter it migrates the database, creates a temporary key for
    ``tenant`` and starts the app's lifespan; on exit it stops the app
    (draining telemetry) and revokes the key. The request log is turned off
    so its lines do not mix with a report on stdout.
    """

    def __init__(
        self,
        config: KeelConfig,
        *,
        tenant: str = "evals",
        retries: int = 2,
        backoff_s: float = 0.5,
        timeout_s: float = 120.0,
    ) -> None:
        super().__init__(
            "http://keel", "", retries=retries, backoff_s=backoff_s, timeout_s=timeout_s
        )
        self.config = config
        self.tenant = tenant
        self._stack: AsyncExitStack | None = None
        self.app_state: Any = None  # the app's AppState while running

    async def __aenter__(self) -> InProcessGatewayClient:
        from keel.api import create_app
        from keel.config import LogConfig
        from keel.store import KeyStore, make_engine, upgrade

        telemetry = self.config.telemetry.model_copy(update={"log": LogConfig(destination="off")})
        config = self.config.model_copy(update={"telemetry": telemetry})
        engine = make_engine(config.database_url)
        try:
            upgrade(engine)
            keys = KeyStore(engine)
            key, record = keys.create_key(
                self.tenant, name="keel eval", expires_at=datetime.now(UTC) + _KEY_LIFETIME
            )
        except BaseException:
            engine.dispose()
            raise
        stack = AsyncExitStack()
        stack.callback(engine.dispose)
        stack.callback(keys.revoke, record.id)
        try:
            app = create_app(config)
            state = await stack.enter_async_context(
                app.control.router.lifespan_context(app.control)
            )
            shared = dict(state or {})
            self.app_state = shared.get("keel")

            async def with_state(scope: Any, receive: Any, send: Any) -> None:
                scope["state"] = dict(shared)
                await app(scope, receive, send)

            self._transport = httpx.ASGITransport(app=with_state)
            self._headers = {"authorization": f"Bearer {key}"}
            stack.push_async_callback(self.aclose)
            self._open()
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

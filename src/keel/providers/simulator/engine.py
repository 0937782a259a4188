"""The simulation itself: given a parsed request, decide what happens.

``SimulatorEngine.plan_chat`` and ``plan_embeddings`` are synchronous and do
no I/O; they return either a ``Failure`` or a result carrying the delays to
apply. The in-process upstream and the HTTP server execute those plans (sleep,
render, count), so both behave identically for the same seed.

Determinism: every planned request draws exactly four numbers from the
engine's RNG, in a fixed order, whatever the config and the outcome. Request
N's fate therefore depends only on the seed and N.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from keel.config import Delay, SimulatorProvider
from keel.errors import InvalidRequest
from keel.providers.simulator._answers import corrupt, derived_sentence, fill_schema
from keel.providers.simulator._embeddings import embed_text, embed_token_ids
from keel.providers.simulator._tokens import count_tokens, split_tokens

Json = dict[str, Any]
FailureKind = Literal["outage", "rate_limited", "error", "timeout", "context_length", "invalid"]
FinishReason = Literal["stop", "length", "tool_calls"]
Outcome = Literal["completed", "error", "cancelled"]

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile
_MAX_OVER_P99 = 10.0  # cap log-normal tails so one sample cannot stall a test for minutes


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    parameters: Json


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat request reduced to what the simulation needs, whatever the wire API."""

    last_user: str
    prompt_tokens: int
    max_tokens: int | None = None
    tool: Tool | None = None  # the tool to call, already decided from tools/tool_choice
    json_mode: bool = False
    json_schema: Json | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    input: Json
    arguments: str  # ``input`` as JSON text, as OpenAI sends it


@dataclass(frozen=True, slots=True)
class Completion:
    key: str  # unique per request; renderers prefix it (chatcmpl-, msg_, call_...)
    text: str
    pieces: list[str]  # ``text`` cut into tokens, for streaming
    tool_call: ToolCall | None
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # whole response, non-streaming
    ttft_s: float  # first chunk, streaming
    token_gap_s: float  # between later chunks, streaming
    wrong: bool = False


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int
    latency_s: float


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    status: int
    message: str
    retry_after: float | None = None
    param: str | None = None

    @classmethod
    def invalid(cls, error: InvalidRequest) -> Failure:
        """A request the simulated server refuses with a 400, as real APIs do."""
        return cls("invalid", 400, error.message, param=error.param)

    def headers(self) -> dict[str, str]:
        """The HTTP headers sent with this failure: Retry-After, when there is one.

        Both spellings, as OpenAI sends them; ``retry-after`` is whole seconds,
        rounded up so a client never comes back early.
        """
        if self.retry_after is None:
            return {}
        return {
            "retry-after": str(max(1, math.ceil(self.retry_after))),
            "retry-after-ms": str(round(self.retry_after * 1000)),
        }


@dataclass(slots=True)
class SimStats:
    """Counters for tests and drills; ``cancelled`` proves disconnects reach the upstream."""

    requests: int = 0
    completed: int = 0
    errors: int = 0
    cancelled: int = 0
    in_flight: int = 0

    def begin(self) -> None:
        self.requests += 1
        self.in_flight += 1

    def end(self, outcome: Outcome) -> None:
        self.in_flight -= 1
        if outcome == "completed":
            self.completed += 1
        elif outcome == "error":
            self.errors += 1
        else:
            self.cancelled += 1

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "errors": self.errors,
            "cancelled": self.cancelled,
            "in_flight": self.in_flight,
        }


@dataclass(frozen=True, slots=True)
class _Draws:
    fail: float
    wrong: float
    latency_z: float
    ttft_z: float


def _sample(delay: Delay, z: float) -> float:
    """Seconds from a log-normal with the given p50 and p99 (constant p50 without p99)."""
    p50, p99 = delay.p50_ms, delay.p99_ms
    if p50 <= 0:
        return 0.0
    if p99 is None or p99 <= p50:
        return p50 / 1000
    sigma = math.log(p99 / p50) / _Z99
    return min(p50 * math.exp(sigma * z), p99 * _MAX_OVER_P99) / 1000


class SimulatorEngine:
    """Plans simulated calls for one ``SimulatorProvider``; shared by upstream and server.

    ``clock`` (monotonic seconds) is injectable so outage schedules can be
    tested without waiting; outages are measured from construction.
    """

    def __init__(
        self, config: SimulatorProvider, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        self.stats = SimStats()
        self._rng = random.Random(config.seed)
        # Compiled once here: per-request compilation would dominate the fast path.
        self._scripts = [(re.compile(a.pattern), a.answer, a.wrong_answer) for a in config.answers]
        self._started = clock()
        self._manual_outages: list[tuple[float, float, int]] = []
        salt = str(config.seed).encode() if config.seed is not None else os.urandom(8)
        self._run = hashlib.blake2b(salt, digest_size=4).hexdigest()
        self._seq = 0

    # --- outages ---------------------------------------------------------

    def start_outage(self, duration_s: float, status: int = 503) -> None:
        """Fail every call for the next ``duration_s`` seconds with ``status``."""
        now = self.clock()
        self._manual_outages.append((now, now + duration_s, status))

    def clear_outages(self) -> None:
        """End outages started with ``start_outage`` (scheduled ones keep their schedule)."""
        self._manual_outages.clear()

    def outage_at(self, now: float) -> tuple[int, float] | None:
        """``(status, seconds left)`` if an outage is on at ``now``, else None."""
        self._manual_outages = [o for o in self._manual_outages if o[1] > now]
        for start, end, status in self._manual_outages:
            if start <= now:
                return status, end - now
        elapsed = now - self._started
        for outage in self.config.outages:
            into = elapsed - outage.start_s
            if into < 0:
                continue
            if outage.every_s is not None:
                into %= outage.every_s
            if into < outage.duration_s:
                return outage.status, outage.duration_s - into
        return None

    # --- planning --------------------------------------------------------

    def _next(self) -> tuple[str, _Draws]:
        self._seq += 1
        rng = self._rng
        draws = _Draws(rng.random(), rng.random(), rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0))
        return f"{self._run}{self._seq:08x}", draws

    def _failure(self, draws: _Draws, request: ChatRequest | None) -> Failure | None:
        config = self.config
        outage = self.outage_at(self.clock())
        if outage is not None:
            status, left = outage
            return Failure("outage", status, "The simulated upstream is in an outage.", left)
        if request is not None:
            invalid = self._invalid(request)
            if invalid is not None:
                return invalid
        threshold = config.rate_limit_rate
        if draws.fail < threshold:
            return Failure("rate_limited", 429, "Rate limit reached.", config.retry_after_s)
        threshold += config.error_rate
        if draws.fail < threshold:
            return Failure("error", 500, "The simulated upstream failed.")
        if draws.fail < threshold + config.timeout_rate:
            return Failure("timeout", 504, "The simulated upstream did not answer in time.")
        return None

    def _invalid(self, request: ChatRequest) -> Failure | None:
        limit = self.config.max_output_tokens
        if request.max_tokens is not None and request.max_tokens > limit:
            return Failure(
                "invalid",
                400,
                f"max_tokens is too large: {request.max_tokens}. "
                f"This model supports at most {limit} completion tokens.",
                param="max_tokens",
            )
        needed = request.prompt_tokens + (request.max_tokens or 0)
        if needed > self.config.context_window:
            return Failure(
                "context_length",
                400,
                f"This model's maximum context length is {self.config.context_window} tokens. "
                f"However, you requested {needed} tokens ({request.prompt_tokens} in the "
                f"messages, {request.max_tokens or 0} in the completion).",
                param="messages",
            )
        return None

    def plan_chat(self, request: ChatRequest) -> Completion | Failure:
        """Decide the outcome of one chat call."""
        key, draws = self._next()
        failure = self._failure(draws, request)
        if failure is not None:
            return failure
        wrong = draws.wrong >= self.config.quality
        tool_call = None
        finish: FinishReason = "stop"
        if request.tool is not None:
            tool_call = self._tool_call(key, request)
            text, pieces = "", []
            completion_tokens = count_tokens(tool_call.name) + count_tokens(tool_call.arguments)
            finish = "tool_calls"
        else:
            text = self._content(request, wrong)
            pieces = split_tokens(text)
            if request.max_tokens is not None and len(pieces) > request.max_tokens:
                pieces = pieces[: request.max_tokens]
                text = "".join(pieces)
                finish = "length"
            completion_tokens = count_tokens(text)
        tps = self.config.tokens_per_second
        gap = 1 / tps if tps else 0.0
        return Completion(
            key=key,
            text=text,
            pieces=pieces,
            tool_call=tool_call,
            finish_reason=finish,
            prompt_tokens=request.prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=_sample(self.config.latency, draws.latency_z) + completion_tokens * gap,
            ttft_s=_sample(self.config.ttft, draws.ttft_z),
            token_gap_s=gap,
            wrong=wrong and tool_call is None,
        )

    def plan_embeddings(
        self, inputs: list[str | list[int]], dimensions: int | None = None
    ) -> Embeddings | Failure:
        """Decide the outcome of one embeddings call; vectors are deterministic."""
        _, draws = self._next()
        failure = self._failure(draws, None)
        if failure is not None:
            return failure
        size = dimensions or self.config.embedding_dimensions
        vectors = [
            embed_text(item, size) if isinstance(item, str) else embed_token_ids(item, size)
            for item in inputs
        ]
        tokens = sum(count_tokens(i) if isinstance(i, str) else len(i) for i in inputs)
        return Embeddings(vectors, tokens, _sample(self.config.latency, draws.latency_z))

    # --- answers ---------------------------------------------------------

    def answer(self, prompt: str, *, wrong: bool = False) -> str:
        """The scripted, default or derived answer to ``prompt`` (or its wrong twin)."""
        for pattern, answer, wrong_answer in self._scripts:
            if pattern.search(prompt):
                if not wrong:
                    return answer
                return wrong_answer if wrong_answer is not None else corrupt(answer)
        base = self.config.default_answer
        if base is None:
            base = derived_sentence(prompt)
        return corrupt(base) if wrong else base

    def _content(self, request: ChatRequest, wrong: bool) -> str:
        text = self.answer(request.last_user, wrong=wrong)
        if request.json_schema is not None:
            return orjson.dumps(fill_schema(request.json_schema, text)).decode()
        if request.json_mode:
            return orjson.dumps({"answer": text}).decode()
        return text

    def _tool_call(self, key: str, request: ChatRequest) -> ToolCall:
        assert request.tool is not None
        # Tools usually want something from the question (a city, a query): pass its start.
        hint = " ".join(request.last_user.split()[:8])
        arguments = fill_schema(request.tool.parameters, hint)
        if not isinstance(arguments, dict):
            arguments = {}
        return ToolCall(key, request.tool.name, arguments, orjson.dumps(arguments).decode())


def pick_tool(
    tools: list[Tool], forced: str | None, *, disabled: bool, after_tool_result: bool
) -> Tool | None:
    """The tool the simulated model calls, or None to answer in text.

    It calls one whenever tools are offered, unless told not to or it has just
    been given a tool's result (otherwise agent loops would never end).
    """
    if not tools or disabled or after_tool_result:
        return None
    if forced is not None:
        for tool in tools:
            if tool.name == forced:
                return tool
    return tools[0]

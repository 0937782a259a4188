"""Shared by the runner, compare, gate and report tests: a fake gateway, small scorers, suites."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keel.evals.base import CallResult, Example, Score, ScoringCase
from keel.evals.client import CallError, ServedPrompt
from keel.evals.suite import Suite, parse_suite

Answer = Callable[[Mapping[str, Any]], str]


def variables_text(body: Mapping[str, Any]) -> str:
    """The text of a prompt request's ``text`` variable, or the last message's content."""
    prompt = body.get("prompt")
    if isinstance(prompt, Mapping):
        return str(prompt["variables"].get("text", ""))
    return str(body["messages"][-1]["content"])


class FakeGateway:
    """A ``GatewayClient`` whose answer is a function of the request body.

    ``versions`` maps a prompt version to an answer function; ``labels`` maps
    a label to a version. An answer function raising ``CallError`` fails
    that call.
    """

    def __init__(
        self,
        answer: Answer | None = None,
        *,
        versions: Mapping[str, Answer] | None = None,
        labels: Mapping[str, str] | None = None,
        delay: Callable[[Mapping[str, Any]], float] | None = None,
        tokens: int = 10,
        cost: float | None = 0.001,
    ) -> None:
        self.answer = answer or variables_text
        self.versions = dict(versions or {})
        self.labels = dict(labels or {})
        self.delay = delay
        self.tokens = tokens
        self.cost = cost
        self.bodies: list[Mapping[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def chat(self, body: Mapping[str, Any]) -> CallResult:
        self.bodies.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay is not None:
                await asyncio.sleep(self.delay(body))
            prompt = body.get("prompt")
            version = prompt.get("version") if isinstance(prompt, Mapping) else None
            answer = self.versions.get(version, self.answer) if version else self.answer
            text = answer(body)
        finally:
            self.in_flight -= 1
        return CallResult(
            text=text,
            response={"choices": [{"message": {"content": text}}]},
            latency_ms=5.0,
            cost_usd=self.cost,
            input_tokens=self.tokens,
            output_tokens=2,
            prompt_version=version,
        )

    async def embed(self, alias: str, texts: Sequence[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]

    async def prompt(
        self, name: str, *, label: str | None = None, version: str | None = None
    ) -> ServedPrompt | None:
        if label is not None:
            version = self.labels.get(label)
        if version is None or (self.versions and version not in self.versions):
            return None
        return ServedPrompt(name, version, f"sha256:{name}-{version}")


def failing(message: str = "503 upstream down", status: int = 503) -> Answer:
    def answer(body: Mapping[str, Any]) -> str:
        raise CallError(message, status=status)

    return answer


class Exact:
    """1 when the answer equals the example's ``expected``."""

    def __init__(self, name: str = "exact") -> None:
        self.name = name

    async def score(self, case: ScoringCase) -> Score:
        ok = case.output.text == case.example.expected
        detail = None if ok else f"expected {case.example.expected!r}, got {case.output.text!r}"
        return Score(1.0 if ok else 0.0, ok, detail)


class Length:
    """Shorter is better: 1 at or under ``limit`` characters, passing at 0.5."""

    def __init__(self, name: str = "short", limit: int = 10) -> None:
        self.name = name
        self.limit = limit

    async def score(self, case: ScoringCase) -> Score:
        value = min(1.0, self.limit / max(1, len(case.output.text)))
        return Score(value, value >= 0.5)


class Boom:
    """A scorer that always raises."""

    name = "boom"

    async def score(self, case: ScoringCase) -> Score:
        raise RuntimeError("scorer exploded")


def examples(n: int, *, tags: Callable[[int], Sequence[str]] | None = None) -> list[Example]:
    """``n`` examples whose ``text`` variable is their expected answer."""
    return [
        Example(
            id=f"ex{i:04d}",
            variables={"text": f"answer {i}"},
            messages=[{"role": "user", "content": f"answer {i}"}],
            expected=f"answer {i}",
            tags=tuple(tags(i)) if tags else (),
        )
        for i in range(n)
    ]


def suite(**overrides: Any) -> Suite:
    raw: dict[str, Any] = {
        "name": "demo",
        "dataset": "data.jsonl",
        "target": {"prompt": "classify@2.0.0"},
        "scorers": [{"type": "exact"}],
        **overrides,
    }
    return parse_suite(raw)

"""The LLM judge: rubric scoring (G-Eval style) and groundedness, through the gateway.

A ``Judge`` asks one model alias for a JSON verdict (at temperature 0 unless told
otherwise: reasoning models accept only 1), through
the same ``GatewayClient`` the run uses, so every judge call is traced and
costed like any other request. Verdicts are kept in a ``JudgeCache`` keyed on
the alias, the hash of the full judge instructions and the hashes of what the
judge saw (see ``keel.store.judge_cache``): re-running an unchanged suite
calls no judge. A reply that is not a valid verdict is asked for once more;
a second bad reply raises ``JudgeError``, which a run counts as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from keel.evals import _judge_prompts as prompts
from keel.evals._judge_prompts import Scale
from keel.evals.base import GatewayClient
from keel.evals.scorers._base import ScoringError
from keel.store.judge_cache import JudgeCache, JudgeCacheKey, sha256_hex

__all__ = ["Claim", "Judge", "JudgeError", "JudgeUsage", "Rubric", "Scale", "Verdict"]

VerdictKind = Literal["rubric", "groundedness"]
DEFAULT_MAX_TOKENS = 1024
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


class JudgeError(ScoringError):
    """The judge did not give a usable verdict, even when asked a second time.

    A ``ScoringError``: the runner records the example as an error, which
    counts as a failure.
    """


class InvalidVerdict(ValueError):
    """One reply that is not a verdict; the message says why, for the repair prompt."""


@dataclass(frozen=True, slots=True)
class Rubric:
    """What a rubric judge checks. ``steps`` empty: Keel's default evaluation steps."""

    criteria: str
    steps: Sequence[str] = ()
    scale: Scale = "1-5"

    def __post_init__(self) -> None:
        if not self.criteria.strip():
            raise ValueError("a rubric needs criteria")
        if self.scale not in prompts.SCALES:
            raise ValueError(f"scale: expected one of {sorted(prompts.SCALES)}, got {self.scale!r}")


@dataclass(frozen=True, slots=True)
class Claim:
    text: str
    supported: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's verdict. ``score`` is normalised to [0, 1]; ``raw_score`` is as given.

    ``passed`` is the judge's own "pass" for a rubric, and "every claim
    supported" for groundedness; scorers may apply their own threshold to
    ``score`` instead. ``cached`` is True when no judge was called for it.
    """

    kind: VerdictKind
    score: float
    passed: bool
    reason: str
    raw_score: float | None = None
    claims: tuple[Claim, ...] = ()
    cached: bool = False

    @property
    def unsupported(self) -> tuple[str, ...]:
        return tuple(c.text for c in self.claims if not c.supported)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready (what the cache stores)."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "score": self.score,
            "pass": self.passed,
            "reason": self.reason,
            "raw_score": self.raw_score,
        }
        if self.kind == "groundedness":
            data["claims"] = [{"claim": c.text, "supported": c.supported} for c in self.claims]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, cached: bool = False) -> Verdict:
        """The inverse of :meth:`as_json`; raises ``InvalidVerdict`` on anything else."""
        kind = data.get("kind")
        if kind not in ("rubric", "groundedness"):
            raise InvalidVerdict("not a stored verdict")
        raw = data.get("raw_score")
        return cls(
            kind=kind,
            score=_number(data.get("score")),
            passed=_boolean(data.get("pass"), "pass"),
            reason=str(data.get("reason", "")),
            raw_score=None if raw is None else _number(raw),
            claims=_claims(data.get("claims", [])),
            cached=cached,
        )


@dataclass(slots=True)
class JudgeUsage:
    """What this judge's own calls cost: they are requests like any other."""

    calls: int = 0  # retries included; cache hits are not calls
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0  # the sum of the known costs
    unknown_cost_calls: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "unknown_cost_calls": self.unknown_cost_calls,
        }


@dataclass(frozen=True, slots=True)
class _Task:
    kind: VerdictKind
    system: str
    user: str
    key: JudgeCacheKey
    scale: Scale | None = None


@dataclass(slots=True)
class _State:
    memo: dict[str, Verdict] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)


class Judge:
    """One judge alias behind a gateway, with an optional persistent cache.

    Equal questions asked at once (repeats of one example) wait for one call.
    """

    def __init__(
        self,
        gateway: GatewayClient,
        alias: str,
        cache: JudgeCache | None = None,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = 0.0,
    ) -> None:
        if not alias.strip():
            raise ValueError("the judge needs a model alias")
        self.gateway = gateway
        self.alias = alias
        self.cache = cache
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.usage = JudgeUsage()
        self._state = _State()

    @property
    def calls(self) -> int:
        """Judge calls made through the gateway so far (retries included)."""
        return self.usage.calls

    async def rate(
        self,
        output: str,
        rubric: Rubric,
        *,
        reference: str | None = None,
        context: Sequence[str] | None = None,
    ) -> Verdict:
        """Score ``output`` against ``rubric``, showing the reference and context given."""
        steps = tuple(rubric.steps) or prompts.default_steps(
            reference=reference is not None, context=context is not None
        )
        system = prompts.rubric_system(rubric.criteria, steps, rubric.scale)
        task = self._task("rubric", system, output, reference, context, rubric.scale)
        return await self._verdict(task)

    async def groundedness(self, output: str, context: Sequence[str]) -> Verdict:
        """Which claims of ``output`` the ``context`` supports; score = supported / total."""
        task = self._task(
            "groundedness", prompts.groundedness_system(), output, None, context, None
        )
        return await self._verdict(task)

    def prompt_hash(self, system: str) -> str:
        """The judge prompt hash: instructions, the layout around the candidate, parameters."""
        params = self._params()
        return sha256_hex(
            orjson.dumps(
                {"system": system, "layout": prompts.layout(), "params": params},
                option=orjson.OPT_SORT_KEYS,
            ).decode()
        )

    def _params(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "response_format": {"type": "json_object"},
            "max_tokens": self.max_tokens,
        }

    def _task(
        self,
        kind: VerdictKind,
        system: str,
        output: str,
        reference: str | None,
        context: Sequence[str] | None,
        scale: Scale | None,
    ) -> _Task:
        key = JudgeCacheKey(
            judge_alias=self.alias,
            judge_prompt_hash=self.prompt_hash(system),
            output_hash=sha256_hex(output),
            reference_hash=None if reference is None else sha256_hex(reference),
            context_hash=None
            if context is None
            else sha256_hex(orjson.dumps(list(context)).decode()),
        )
        user = prompts.user_message(output, reference=reference, context=context)
        return _Task(kind, system, user, key, scale)

    async def _verdict(self, task: _Task) -> Verdict:
        key = task.key.key
        lock = self._state.locks.setdefault(key, asyncio.Lock())
        async with lock:
            known = self._state.memo.get(key)
            if known is None and self.cache is not None:
                known = await self._from_cache(task.key)
            if known is None:
                known = await self._ask(task)
                if self.cache is not None:
                    await asyncio.to_thread(self.cache.put, task.key, known.as_json())
                self._state.memo[key] = known
                return known
            self._state.memo[key] = known
            return replace(known, cached=True)

    async def _from_cache(self, key: JudgeCacheKey) -> Verdict | None:
        assert self.cache is not None
        stored = await asyncio.to_thread(self.cache.get, key)
        if stored is None:
            return None
        try:
            return Verdict.from_json(stored)
        except InvalidVerdict:
            return None  # written by an incompatible Keel: judge again

    async def _ask(self, task: _Task) -> Verdict:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": task.system},
            {"role": "user", "content": task.user},
        ]
        problem = ""
        for attempt in range(2):
            result = await self.gateway.chat(
                {"model": self.alias, "messages": messages, **self._params()}
            )
            self._count(result.input_tokens, result.output_tokens, result.cost_usd)
            try:
                return _parse(task, result.text)
            except InvalidVerdict as error:
                problem = str(error)
                if attempt == 0:
                    # Not the same request again: at temperature 0 (or from a response
                    # cache) it would get the same reply. Show the judge what was wrong.
                    messages = [
                        *messages,
                        {"role": "assistant", "content": result.text},
                        {"role": "user", "content": prompts.repair_message(problem)},
                    ]
        raise JudgeError(
            f"judge {self.alias!r} gave no valid {task.kind} verdict after a retry: {problem}"
        )

    def _count(self, input_tokens: int, output_tokens: int, cost_usd: float | None) -> None:
        self.usage.calls += 1
        self.usage.input_tokens += input_tokens
        self.usage.output_tokens += output_tokens
        if cost_usd is None:
            self.usage.unknown_cost_calls += 1
        else:
            self.usage.cost_usd += cost_usd


# --- parsing -------------------------------------------------------------------------


def _parse(task: _Task, text: str) -> Verdict:
    data = _json_object(text, expect=("claims",) if task.kind == "groundedness" else ("score",))
    if task.kind == "groundedness":
        claims = _claims(data.get("claims"))
        supported = sum(c.supported for c in claims)
        # No factual claims: nothing is unsupported, so the answer is grounded.
        score = supported / len(claims) if claims else 1.0
        return Verdict(
            "groundedness",
            score=score,
            passed=supported == len(claims),
            reason=_reason(data),
            raw_score=score,
            claims=claims,
        )
    assert task.scale is not None
    raw = _number(data.get("score"))
    low, high = (1.0, 5.0) if task.scale == "1-5" else (0.0, 1.0)
    if not low <= raw <= high:
        raise InvalidVerdict(f'"score" must be from {low:g} to {high:g}, got {raw:g}')
    return Verdict(
        "rubric",
        score=(raw - low) / (high - low),
        passed=_boolean(data.get("pass"), "pass"),
        reason=_reason(data),
        raw_score=raw,
    )


def _json_object(text: str, *, expect: Sequence[str]) -> dict[str, Any]:
    """The JSON object in ``text``: bare, in a code fence, or amid prose.

    A verdict wrapped in a one-key envelope whose value is JSON text
    (``{"answer": "{\\"score\\": 4, ...}"}``, as some JSON modes and Keel's
    simulator produce) is unwrapped once.
    """
    candidate = text.strip()
    if fenced := _FENCE.match(candidate):
        candidate = fenced.group(1).strip()
    data = _loads(candidate)
    if data is None and (start := candidate.find("{")) >= 0:
        data = _loads(candidate[start : candidate.rfind("}") + 1])
    if not isinstance(data, dict):
        raise InvalidVerdict("no JSON object found" if text.strip() else "the reply was empty")
    if not any(k in data for k in expect) and len(data) == 1:
        (inner,) = data.values()
        if isinstance(inner, str) and isinstance(nested := _loads(inner.strip()), dict):
            data = nested
    missing = [k for k in expect if k not in data]
    if missing:
        raise InvalidVerdict(f'the object has no "{missing[0]}" key')
    return data


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value.strip())
    if not _is_number(value):
        raise InvalidVerdict(f'"score" must be a number, got {value!r}')
    return float(value)


def _boolean(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidVerdict(f'"{key}" must be true or false, got {value!r}')


def _reason(data: Mapping[str, Any]) -> str:
    reason = data.get("reason", "")
    return reason.strip() if isinstance(reason, str) else str(reason)


def _claims(value: Any) -> tuple[Claim, ...]:
    if not isinstance(value, list):
        raise InvalidVerdict(f'"claims" must be a list, got {type(value).__name__}')
    claims = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("claim"), str):
            raise InvalidVerdict('each of "claims" must be {"claim": text, "supported": bool}')
        claims.append(Claim(item["claim"], _boolean(item.get("supported"), "supported")))
    return tuple(claims)

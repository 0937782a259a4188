"""Registry prompts on the request path: the per-replica catalog and the render stage.

A request may name a prompt (``"prompt": {"name", "label" | "version",
"variables"}``) instead of, or ahead of, its ``messages``. The catalog answers
which version a label points at from memory, and follows label moves from the
registry's change feed every ``refresh_s`` (1 s), so a promotion or a rollback
reaches every replica within a few seconds without a query per request.
Versions are immutable, so a version once read is cached for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidRequest, NotFound
from keel.pipeline.context import RequestContext
from keel.pipeline.schema import KEEL_FIELDS, PromptRef, upstream_fields

if TYPE_CHECKING:
    from keel.prompts import PromptFile
    from keel.store import PromptRegistry

log = logging.getLogger("keel.prompts")

DEFAULT_LABEL = "production"
# An unknown version is asked for again after this long, not on every request.
_MISS_TTL_S = 1.0


@dataclass(frozen=True, slots=True)
class ServedPrompt:
    name: str
    version: str
    content_hash: str
    file: PromptFile


class PromptCatalog:
    def __init__(self, registry: PromptRegistry, *, refresh_s: float = 1.0) -> None:
        self._registry = registry
        self._refresh_s = refresh_s
        self._labels: dict[tuple[str, str], str] = {}
        self._versions: dict[tuple[str, str], ServedPrompt] = {}
        self._misses: dict[tuple[str, str], float] = {}
        self._position = 0

    async def load(self) -> None:
        position, labels = await asyncio.to_thread(self._registry.snapshot)
        self._labels = {(label.name, label.label): label.version for label in labels}
        self._position = position

    async def refresh(self) -> None:
        moves = await asyncio.to_thread(self._registry.moves_since, self._position)
        for move in moves:
            self._labels[(move.name, move.label)] = move.to_version
            self._position = max(self._position, move.id)
            log.info("prompt %s: %s -> %s", move.name, move.label, move.to_version)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # keep serving what is known; try again next tick
                log.warning("reading prompt label moves failed: %s", exc)

    def label(self, name: str, label: str) -> str | None:
        return self._labels.get((name, label))

    async def get(self, ref: PromptRef) -> ServedPrompt:
        """The version ``ref`` names: by version, or the one its label points at."""
        if ref.version is not None:
            version = ref.version
        else:
            label = ref.label or DEFAULT_LABEL
            found = self._labels.get((ref.name, label))
            if found is None:
                raise NotFound(
                    f'prompt "{ref.name}" has no label "{label}"',
                    param="prompt.label" if ref.label else "prompt.name",
                )
            version = found
        key = (ref.name, version)
        served = self._versions.get(key)
        if served is None:
            served = await self._load(key)
        return served

    async def _load(self, key: tuple[str, str]) -> ServedPrompt:
        missed = self._misses.get(key)
        if missed is None or time.monotonic() - missed > _MISS_TTL_S:
            stored = await asyncio.to_thread(self._registry.find, *key)
            if stored is not None:
                served = ServedPrompt(
                    stored.name, stored.version, stored.content_hash, stored.prompt()
                )
                self._versions[key] = served
                return served
            self._misses[key] = time.monotonic()
        raise NotFound(f'prompt "{key[0]}" has no version "{key[1]}"', param="prompt.version")


class RenderPrompt:
    """Turns a prompt reference into the request the upstream gets."""

    name = "prompt"

    def __init__(self, catalog: PromptCatalog) -> None:
        self._catalog = catalog

    async def __call__(self, ctx: RequestContext) -> None:
        ref = ctx.prompt_ref
        if ref is None:
            return
        served = await self._catalog.get(ref)
        from keel.prompts import render  # Jinja2 loads with the first prompt, not at start

        rendered: list[dict[str, Any]] = list(render(served.file, ref.variables))
        body = merge_request(served, ctx.body)
        body["messages"] = rendered + list(ctx.body.get("messages") or ())
        if ctx.variant_alias is not None:  # an experiment's variant names its own model
            body["model"] = ctx.variant_alias
        ctx.prompt = served
        ctx.upstream_body = upstream_fields(body)
        ctx.body = body


def merge_request(served: ServedPrompt, request: dict[str, Any]) -> dict[str, Any]:
    """The prompt's model and params, with what the request may override laid over them."""
    prompt = served.file
    label = f"{served.name}@{served.version}"
    model = request.get("model")
    if model is not None and model != prompt.model and "model" not in prompt.overridable:
        raise InvalidRequest(
            f'model: prompt {label} uses model "{prompt.model}"; omit model or pass that',
            param="model",
        )
    body: dict[str, Any] = {**prompt.params, "model": prompt.model}
    for name, value in request.items():
        if name in ("messages", "model"):  # the prompt renders one; the other is checked above
            continue
        owned = name in prompt.params and name not in KEEL_FIELDS
        if owned and name not in prompt.overridable:
            raise InvalidRequest(
                f"{name}: prompt {label} sets it and does not let requests override it",
                param=name,
            )
        body[name] = value
    if model is not None:
        body["model"] = model
    return body

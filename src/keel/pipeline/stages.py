"""The pipeline's stages and the one list that orders them."""

from __future__ import annotations

import time
from typing import Protocol

import orjson

from keel.errors import AuthenticationFailed, InvalidRequest, ModelNotFound
from keel.pipeline.context import RequestContext
from keel.pipeline.experimenting import AssignVariant, ExperimentCatalog
from keel.pipeline.prompting import PromptCatalog, RenderPrompt
from keel.pipeline.schema import upstream_fields, validate_chat, validate_embeddings
from keel.routing import Router
from keel.store import KeyRecord, KeyResolver
from keel.tenants import Gatekeeper


class Stage(Protocol):
    name: str

    async def __call__(self, ctx: RequestContext) -> None: ...


class Parse:
    """JSON and OpenAI schema check; splits Keel's own fields from the upstream body."""

    name = "parse"

    async def __call__(self, ctx: RequestContext) -> None:
        try:
            body = orjson.loads(ctx.raw_body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(
                f"request body is not valid JSON: {exc}", code="invalid_json"
            ) from None
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object", code="invalid_json")
        if ctx.operation == "chat":
            chat = validate_chat(body)
            ctx.stream = chat.stream
            ctx.include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            ctx.end_user, metadata = chat.user, chat.metadata
            ctx.prompt_ref = chat.prompt
        else:
            embeddings = validate_embeddings(body)
            ctx.end_user, metadata = embeddings.user, embeddings.metadata
        ctx.metadata = dict(metadata or {})
        ctx.body = body
        ctx.upstream_body = upstream_fields(body)


class Authenticate:
    """Bearer virtual key → tenant. The key itself is never echoed or logged."""

    name = "auth"

    def __init__(self, resolver: KeyResolver) -> None:
        self._resolver = resolver

    async def __call__(self, ctx: RequestContext) -> None:
        ctx.key = await authenticate(self._resolver, ctx.authorization)


async def authenticate(resolver: KeyResolver, authorization: str | None) -> KeyRecord:
    if not authorization:
        raise AuthenticationFailed("missing API key: send it as 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("malformed Authorization header: expected 'Bearer <key>'")
    record = await resolver.resolve(token)
    if record is None:
        raise AuthenticationFailed("invalid API key (unknown, revoked or expired)")
    return record


class TenantGate:
    """A suspended tenant is refused; everyone else gets their tier for the stages after."""

    name = "tenant"

    def __init__(self, gatekeeper: Gatekeeper) -> None:
        self._gatekeeper = gatekeeper

    async def __call__(self, ctx: RequestContext) -> None:
        assert ctx.key is not None  # Authenticate ran
        ctx.tier = self._gatekeeper.check_tenant(ctx.key)


class ResolveModel:
    """``model`` names an alias this deployment serves, of the right kind."""

    name = "model"

    def __init__(self, router: Router) -> None:
        self._router = router

    async def __call__(self, ctx: RequestContext) -> None:
        requested = ctx.body["model"]
        alias = self._router.alias(requested)
        if alias is None:
            raise ModelNotFound(f'model "{requested}" does not exist', param="model")
        if alias.kind != ctx.operation:
            endpoint = "/v1/embeddings" if alias.kind == "embeddings" else "/v1/chat/completions"
            raise InvalidRequest(
                f'model "{requested}" is a {alias.kind} model; call {endpoint}', param="model"
            )
        ctx.alias = alias


class Limit:
    """Rate limits, concurrency and the budget reservation, in one atomic admission."""

    name = "limits"

    def __init__(self, gatekeeper: Gatekeeper) -> None:
        self._gatekeeper = gatekeeper

    async def __call__(self, ctx: RequestContext) -> None:
        if ctx.tier is not None:
            ctx.held = await self._gatekeeper.admit(ctx, ctx.tier)


class Route:
    """Alias → deployment with retries and fallbacks; the upstream call itself."""

    name = "route"

    def __init__(self, router: Router) -> None:
        self._router = router

    async def __call__(self, ctx: RequestContext) -> None:
        assert ctx.alias is not None  # ResolveModel ran
        deadline = self._router.deadline_for(ctx.alias, ctx.started)
        if ctx.stream:
            ctx.opened = await self._router.open_stream(
                ctx.alias, ctx.upstream_body, deadline=deadline
            )
            ctx.route = ctx.opened.route
        else:
            ctx.route = await self._router.send(
                ctx.alias, ctx.operation, ctx.upstream_body, deadline=deadline
            )


class Pipeline:
    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages

    async def run(self, ctx: RequestContext) -> None:
        stages = ctx.stages
        for stage in self.stages:
            started = time.monotonic()
            try:
                await stage(ctx)
            finally:
                stages.append((stage.name, started, time.monotonic()))


def build_pipeline(
    router: Router,
    resolver: KeyResolver,
    gatekeeper: Gatekeeper,
    catalog: PromptCatalog,
    experiments: ExperimentCatalog,
) -> Pipeline:
    """The order of the data plane, in one place."""
    stages: list[Stage] = [
        Parse(),
        Authenticate(resolver),
        TenantGate(gatekeeper),
        AssignVariant(experiments, gatekeeper.tier_name),
        RenderPrompt(catalog),
        ResolveModel(router),
    ]
    if gatekeeper.active:  # no tiers configured: no limits to check
        stages.append(Limit(gatekeeper))
    stages.append(Route(router))
    return Pipeline(stages)


def build_shadow_pipeline(router: Router, catalog: PromptCatalog) -> Pipeline:
    """What a mirrored copy goes through: it is already authenticated and assigned,
    and it is not charged to its tenant's limits."""
    return Pipeline([RenderPrompt(catalog), ResolveModel(router), Route(router)])

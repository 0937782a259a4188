"""Everything a gateway process holds, built once in the lifespan and torn down in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from starlette.requests import Request

from keel._gc import settle_after_start
from keel.api.telemetry_worker import output_sinks, start_process
from keel.config import KeelConfig
from keel.costs import PriceBook
from keel.experiments.runtime import Controller
from keel.pipeline import Pipeline, authenticate, build_pipeline
from keel.pipeline.emit import Emitter
from keel.pipeline.experimenting import ExperimentCatalog
from keel.pipeline.online_judge import OnlineJudge
from keel.pipeline.prompting import PromptCatalog
from keel.pipeline.shadow import ShadowRunner
from keel.pipeline.stages import build_shadow_pipeline
from keel.providers import Upstream, build_upstream
from keel.routing import Router
from keel.store import (
    ExperimentStore,
    JudgeCache,
    KeyRecord,
    KeyResolver,
    KeyStore,
    PromptRegistry,
    RequestStore,
    make_engine,
)
from keel.telemetry import Sink, TelemetryWriter
from keel.telemetry.metrics import Metrics
from keel.telemetry.sinks import MetricsSink
from keel.tenants import Gatekeeper
from keel.tenants.runtime import Tenancy, build_tenancy

log = logging.getLogger("keel.api")


@dataclass(slots=True)
class AppState:
    config: KeelConfig
    engine: Engine
    upstreams: dict[str, Upstream]
    router: Router
    resolver: KeyResolver
    pipeline: Pipeline
    requests: RequestStore
    metrics: Metrics
    writer: TelemetryWriter
    emitter: Emitter
    tenancy: Tenancy
    prompts: PromptCatalog
    experiments: ExperimentCatalog
    shadow: ShadowRunner
    online_judge: OnlineJudge

    @property
    def gatekeeper(self) -> Gatekeeper:
        return self.tenancy.gatekeeper


def state_of(request: Request) -> AppState:
    """The process state a control-plane handler runs against."""
    state: AppState = request.state.keel
    return state


async def caller(request: Request) -> tuple[AppState, KeyRecord]:
    """The process state and the key that signed a control-plane request (401 if none)."""
    state = state_of(request)
    return state, await authenticate(state.resolver, request.headers.get("authorization"))


@asynccontextmanager
async def app_state(
    config: KeelConfig,
    *,
    upstreams: dict[str, Upstream] | None = None,
    router: Router | None = None,
) -> AsyncIterator[AppState]:
    engine = make_engine(config.database_url)
    built = upstreams
    if built is None:
        built = {name: build_upstream(name, p) for name, p in config.providers.items()}
    routes = router or Router(config, built)
    resolver = KeyResolver(KeyStore(engine))
    requests = RequestStore(engine)
    # Known aliases only: made-up model names must not mint new series.
    metrics = Metrics(known_aliases=[m.alias for m in config.models])
    sinks: list[Sink] = [MetricsSink(metrics)]
    # Telemetry off queues nothing, so it starts no child process.
    if config.telemetry.enabled and config.telemetry.writer == "process":
        sinks.append(start_process(config.telemetry, config.database_url))
    else:
        sinks.extend(output_sinks(config.telemetry, requests))
    writer = TelemetryWriter(config.telemetry, sinks, on_drop=metrics.dropped)
    metrics.set_queue_depth_source(lambda: writer.depth)
    metrics.set_breaker_source(lambda: {n: b.state.value for n, b in routes.breakers.items()})
    prices = PriceBook(config)
    tenancy = build_tenancy(config, engine, requests, prices)
    catalog = PromptCatalog(PromptRegistry(engine))
    experiments = ExperimentCatalog(ExperimentStore(engine))
    emitter = Emitter(config, prices, writer)
    state = AppState(
        config=config,
        engine=engine,
        upstreams=built,
        router=routes,
        resolver=resolver,
        pipeline=build_pipeline(routes, resolver, tenancy.gatekeeper, catalog, experiments),
        requests=requests,
        metrics=metrics,
        writer=writer,
        emitter=emitter,
        tenancy=tenancy,
        prompts=catalog,
        experiments=experiments,
        shadow=ShadowRunner(build_shadow_pipeline(routes, catalog), emitter, routes),
        online_judge=OnlineJudge(routes, emitter, JudgeCache(engine)),
    )
    await tenancy.start()
    await catalog.load()
    await experiments.refresh()
    # One replica at a time analyses each experiment (a lease in the store).
    controller = Controller(engine, tenancy.notifier, interval_s=1.0)
    following = [
        asyncio.ensure_future(catalog.run()),
        asyncio.ensure_future(experiments.run()),
        asyncio.ensure_future(controller.run()),
    ]
    writer.start()
    # The price table takes a moment to load; do it beside serving, not before.
    warming = asyncio.ensure_future(asyncio.to_thread(prices.warm))
    # Everything built so far lives as long as the process, and a request
    # allocates hundreds of containers: at the default threshold a young
    # collection ran every few requests, walking every request in flight and
    # every record queued for telemetry (about 7 µs of CPU per request with
    # telemetry off, 20 to 30 µs fully on; bench/README.md).
    settle_after_start()
    try:
        yield state
    finally:
        warming.cancel()
        for task in following:
            task.cancel()
        # Answered requests still owe their record: their shadow copies and judge scores.
        await state.shadow.drain()
        await state.online_judge.drain()
        await tenancy.aclose()
        # Requests have finished (the server drained them); now drain their records.
        await asyncio.to_thread(writer.stop)
        if upstreams is None:  # injected upstreams belong to the caller
            results = await asyncio.gather(
                *(u.aclose() for u in built.values()), return_exceptions=True
            )
            for failed in (r for r in results if isinstance(r, BaseException)):
                log.warning("closing an upstream failed: %r", failed)
        engine.dispose()

"""The limits stage: a tenant's tier turned into one atomic admission, and its settlement.

Before the upstream call, one ``admit`` takes a request from every rate
bucket that applies (per tenant, key and end user), a concurrency slot, and
reserves the request's maximum possible cost against the tenant's daily and
monthly budgets. After the call, ``settle`` corrects the token buckets to the
upstream's count and the budgets to the actual cost. A request is admitted
only when its worst case fits, so concurrent requests can never race a
tenant past its budget.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from keel.config import Downgrade, KeelConfig, ModelAlias, RateLimits, Tier, tier_with
from keel.errors import (
    BudgetExceeded,
    InvalidRequest,
    ModelNotAllowed,
    RateLimited,
    TenantSuspended,
)
from keel.limits import (
    Admission,
    BudgetLevel,
    BudgetRule,
    ConcurrencyRule,
    LimitsBackend,
    RateRule,
    Refused,
    Ticket,
)
from keel.routing import reachable_deployments
from keel.telemetry.record import Usage
from keel.tenants import estimate
from keel.tenants.directory import TenantDirectory

if TYPE_CHECKING:
    from keel.pipeline.context import RequestContext
    from keel.store import KeyRecord

log = logging.getLogger("keel.tenants")

NANO_PER_USD = 1_000_000_000
# A downgraded request's cost is still counted, against a limit it cannot reach.
_UNBOUNDED = 2**62
# A reservation or slot outlives the slowest request by this much before a
# crashed replica's share is reclaimed.
_LEASE_MARGIN_S = 60.0


class Prices(Protocol):
    def cost(self, deployment: str, usage: Usage) -> float | None: ...


SpentLoader = Callable[[str, date, date], int]  # tenant, first day, last day -> nano-USD


@dataclass(slots=True)
class Held:
    """What one admitted request holds until it settles."""

    ticket: Ticket
    tpm_keys: tuple[str, ...]
    reserved_nano: int


@dataclass(frozen=True, slots=True)
class _Period:
    name: str  # "daily" / "monthly"
    key: str
    first: date
    last: date
    expires_at: float


class Gatekeeper:
    """Tier lookup, the tenant gate and the limits stage, for one gateway process."""

    def __init__(
        self,
        config: KeelConfig,
        backend: LimitsBackend,
        directory: TenantDirectory,
        prices: Prices,
        *,
        spent_loader: SpentLoader,
        on_levels: Callable[[str, tuple[BudgetLevel, ...]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.directory = directory
        self._config = config
        self._tiers = config.tiers
        self._default_tier = config.limits.default_tier
        self._budget_status = config.limits.budget_status
        self._aliases = {m.alias: m for m in config.models}
        self._reachable = {m.alias: reachable_deployments(m, self._aliases) for m in config.models}
        self._prices = prices
        self._spent_loader = spent_loader
        self._on_levels = on_levels
        self._clock = clock
        self._tier_cache: dict[int, tuple[KeyRecord, Tier | None]] = {}
        self._tier_cache_version = -1
        self._seeded: set[str] = set()
        self._seeding: dict[str, asyncio.Future[None]] = {}

    @property
    def active(self) -> bool:
        """False when no tier is configured: the stage then costs nothing."""
        return bool(self._tiers)

    # --- tenant gate --------------------------------------------------------------

    def check_tenant(self, key: KeyRecord) -> Tier | None:
        """Refuse a suspended tenant; the key's effective tier otherwise."""
        policy = self.directory.get(key.tenant)
        if policy is not None and policy.suspended is not None:
            raise TenantSuspended(f'tenant "{key.tenant}" is suspended: {policy.suspended}')
        return self.tier_for(key)

    def tier_for(self, key: KeyRecord) -> Tier | None:
        if self._tier_cache_version != self.directory.version:
            self._tier_cache.clear()
            self._tier_cache_version = self.directory.version
        cached = self._tier_cache.get(key.id)
        if cached is not None and cached[0] is key:
            return cached[1]
        tier = self._resolve_tier(key)
        self._tier_cache[key.id] = (key, tier)
        return tier

    def tier_name(self, key: KeyRecord) -> str | None:
        """The name of the tier ``key`` runs on: its own, its tenant's, or the default."""
        policy = self.directory.get(key.tenant)
        return key.own_tier or (policy.tier if policy else None) or self._default_tier

    def _resolve_tier(self, key: KeyRecord) -> Tier | None:
        policy = self.directory.get(key.tenant)
        name = self.tier_name(key)
        if name is None:
            return None
        base = self._tiers.get(name)
        if base is None:
            log.warning(
                'tier "%s" of tenant %s is not in keel.yaml; using the default', name, key.tenant
            )
            base = self._tiers.get(self._default_tier or "")
            if base is None:
                return None
        overrides = [o for o in (policy.limits if policy else None, key.limits) if o]
        try:
            return tier_with(base, *overrides) if overrides else base
        except ValueError as exc:  # an override the store let through but the tier refuses
            log.warning("ignoring the limits override of %s: %s", key.tenant, exc)
            return base

    # --- limits stage -------------------------------------------------------------

    async def admit(self, ctx: RequestContext, tier: Tier) -> Held | None:
        """Admit ``ctx`` under ``tier`` or raise the policy error that names the limit."""
        assert ctx.key is not None and ctx.alias is not None
        alias = ctx.alias
        if tier.models is not None and alias.alias not in tier.models:
            raise ModelNotAllowed(
                f'model "{alias.alias}" is not available on this tier '
                f"(allowed: {', '.join(tier.models) or 'none'})",
                param="model",
            )
        output = self._output_bound(ctx, tier)
        needs_tokens = _any_tpm(tier) or _has_budget(tier)
        input_tokens = estimate.input_tokens(ctx.operation, ctx.body) if needs_tokens else 0
        now = self._clock()
        periods = self._periods(ctx.key.tenant, tier, now)
        await self._seed(ctx.key.tenant, periods)
        admission, tpm_keys, reserved = self._admission(
            ctx, tier, alias, input_tokens, output, periods, limit_budgets=True
        )
        result = await self.backend.admit(admission)
        if isinstance(result, Refused) and result.kind == "budget":
            on_exceed = tier.budget.on_exceed
            if isinstance(on_exceed, Downgrade) and on_exceed.downgrade != alias.alias:
                ctx.downgraded_from = alias.alias
                ctx.alias = alias = self._aliases[on_exceed.downgrade]
                admission, tpm_keys, reserved = self._admission(
                    ctx, tier, alias, input_tokens, output, periods, limit_budgets=False
                )
                result = await self.backend.admit(admission)
        if isinstance(result, Refused):
            raise self._refusal(ctx.key.tenant, result)
        # A counter nobody seeded (Redis lost its data): seed it on the next request.
        self._seeded.difference_update(result.unseeded)
        return Held(result.ticket, tpm_keys, reserved)

    async def settle(self, ctx: RequestContext, held: Held, usage: Usage) -> None:
        """Correct buckets and budgets to what the call really used and cost."""
        cost_nano: int | None = 0
        if ctx.route is not None:  # an upstream answered; nothing is billed otherwise
            cost = ctx.cost_usd if ctx.priced else None
            cost_nano = None if cost is None else math.ceil(cost * NANO_PER_USD)
        # No upstream answer means no tokens used: the estimate is refunded.
        actual = {key: usage.input_tokens + usage.output_tokens for key in held.tpm_keys}
        levels = await self.backend.settle(held.ticket, actual_tokens=actual, cost_nano=cost_nano)
        if levels and self._on_levels is not None and ctx.key is not None:
            self._on_levels(ctx.key.tenant, levels)

    def _output_bound(self, ctx: RequestContext, tier: Tier) -> int:
        """The most output the call may produce; sets a cap on the request when it must."""
        if ctx.operation != "chat":
            return 0
        requested = estimate.requested_output(ctx.body)
        cap = tier.max_tokens
        if cap is not None and requested is not None:
            asked = ctx.body.get("max_completion_tokens") or ctx.body.get("max_tokens")
            if isinstance(asked, int) and asked > cap:
                field = (
                    "max_completion_tokens" if "max_completion_tokens" in ctx.body else "max_tokens"
                )
                raise InvalidRequest(
                    f"{field}: at most {cap} on this tier, got {asked}", param=field
                )
        if requested is not None:
            return requested
        if cap is None and not _has_budget(tier):
            return 0  # nothing to bound: tpm is corrected to the real count afterwards
        limit = cap if cap is not None else estimate.DEFAULT_MAX_OUTPUT
        # The reservation is only an upper bound if the upstream is held to it.
        ctx.upstream_body = {**ctx.upstream_body, "max_tokens": limit}
        n = ctx.body.get("n")
        return limit * (n if isinstance(n, int) and n > 0 else 1)

    def _admission(
        self,
        ctx: RequestContext,
        tier: Tier,
        alias: ModelAlias,
        input_tokens: int,
        output: int,
        periods: list[_Period],
        *,
        limit_budgets: bool,
    ) -> tuple[Admission, tuple[str, ...], int]:
        assert ctx.key is not None
        tenant = ctx.key.tenant
        scopes: list[tuple[str, str, RateLimits]] = [
            ("tenant", f"t:{tenant}", tier.tenant),
            ("key", f"k:{ctx.key.id}", tier.key),
        ]
        if ctx.end_user:
            scopes.append(("user", f"u:{tenant}:{ctx.end_user}", tier.user))
        rates: list[RateRule] = []
        slots: list[ConcurrencyRule] = []
        tpm_keys: list[str] = []
        for scope, ident, limits in scopes:
            if limits.rpm is not None:
                rates.append(RateRule(f"rpm:{ident}", limits.rpm, 1, f"rpm per {scope}"))
            if limits.tpm is not None:
                key = f"tpm:{ident}"
                rates.append(RateRule(key, limits.tpm, input_tokens + output, f"tpm per {scope}"))
                tpm_keys.append(key)
            if limits.concurrent is not None:
                slots.append(
                    ConcurrencyRule(f"conc:{ident}", limits.concurrent, f"concurrent per {scope}")
                )
        reserve = self._max_cost(alias, input_tokens, output) if periods else 0
        budgets = tuple(
            BudgetRule(
                p.key,
                self._budget_nano(tier, p.name) if limit_budgets else _UNBOUNDED,
                reserve,
                f"{p.name} budget",
                p.expires_at,
            )
            for p in periods
        )
        deadline = alias.deadline_s or self._config.routing.deadline_s
        admission = Admission(
            scope=tenant,
            rates=tuple(rates),
            concurrency=tuple(slots),
            budgets=budgets,
            lease_s=deadline + _LEASE_MARGIN_S,
        )
        return admission, tuple(tpm_keys), reserve

    def _max_cost(self, alias: ModelAlias, input_tokens: int, output: int) -> int:
        """The dearest deployment the request could reach, at its token bounds."""
        usage = Usage(input_tokens=input_tokens, output_tokens=output)
        worst = 0.0
        for deployment in self._reachable[alias.alias]:
            cost = self._prices.cost(deployment, usage)
            if cost is not None:
                worst = max(worst, cost)
        return math.ceil(worst * NANO_PER_USD)

    @staticmethod
    def _budget_nano(tier: Tier, period: str) -> int:
        usd = tier.budget.daily_usd if period == "daily" else tier.budget.monthly_usd
        assert usd is not None
        return math.floor(usd * NANO_PER_USD)

    def _periods(self, tenant: str, tier: Tier, now: float) -> list[_Period]:
        today = datetime.fromtimestamp(now, UTC).date()
        periods = []
        if tier.budget.daily_usd is not None:
            end = today + timedelta(days=1)
            periods.append(
                _Period("daily", f"budget:{tenant}:day:{today}", today, today, _ts(end, 1))
            )
        if tier.budget.monthly_usd is not None:
            first = today.replace(day=1)
            following = (first + timedelta(days=32)).replace(day=1)
            periods.append(
                _Period(
                    "monthly",
                    f"budget:{tenant}:month:{first:%Y-%m}",
                    first,
                    following - timedelta(days=1),
                    _ts(following, 1),
                )
            )
        return periods

    async def _seed(self, tenant: str, periods: list[_Period]) -> None:
        """Start a period's counter from the store's rollups, once per process.

        After a restart (or a Redis flush) the counter would otherwise begin
        at zero and admit a period's budget twice.
        """
        for period in periods:
            if period.key in self._seeded:
                continue
            # Concurrent first requests of a period share one read and one seed.
            pending = self._seeding.get(period.key)
            if pending is None:
                pending = asyncio.ensure_future(self._seed_one(tenant, period))
                self._seeding[period.key] = pending
            await asyncio.shield(pending)

    async def _seed_one(self, tenant: str, period: _Period) -> None:
        try:
            spent = await asyncio.to_thread(self._spent_loader, tenant, period.first, period.last)
            await self.backend.seed_spent(tenant, period.key, spent, period.expires_at)
            self._seeded.add(period.key)
        finally:
            self._seeding.pop(period.key, None)

    def _refusal(self, tenant: str, refused: Refused) -> Exception:
        retry = refused.retry_after_s
        after = f"; retry after {math.ceil(retry)} s" if retry is not None else ""
        if refused.kind == "suspended":
            return TenantSuspended(f'tenant "{tenant}" is suspended: {refused.name}')
        if refused.kind == "budget":
            return BudgetExceeded(
                f"{refused.name} of {refused.limit / NANO_PER_USD:g} USD would be exceeded"
                f" by this request{after}",
                limit=refused.name,
                retry_after_s=retry,
                status=self._budget_status,
            )
        if refused.kind == "concurrency":
            message = f"{refused.name} limit of {refused.limit} requests in flight reached"
        elif retry is None:
            message = f"request is larger than the {refused.name} limit of {refused.limit}"
        else:
            message = f"{refused.name} limit of {refused.limit} reached{after}"
        return RateLimited(message, limit=refused.name, retry_after_s=retry)


def _any_tpm(tier: Tier) -> bool:
    return any(limits.tpm is not None for limits in (tier.tenant, tier.key, tier.user))


def _has_budget(tier: Tier) -> bool:
    return tier.budget.daily_usd is not None or tier.budget.monthly_usd is not None


def _ts(day: date, margin_days: int) -> float:
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=margin_days)
    return moment.timestamp()

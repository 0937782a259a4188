"""Who takes part in an experiment, and which variant each unit sees.

A unit's bucket is a pure function of the experiment's seed and the unit id,
so every replica, and every restart, puts a unit in the same bucket:

    bucket = int.from_bytes(sha256(f"{seed}:{unit_id}".encode())[:8], "big") % 10_000

One bucket is 0.01 % of traffic. Shares (percent) become contiguous bucket
ranges laid out candidates first, from bucket 0 upward in declared order,
with control taking the rest; so growing a single candidate's share (a ramp's
1 -> 5 -> 20 %) only moves control units into it, and a unit once in the
candidate stays there while the share grows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from keel.experiments.spec import Experiment, Variant

BUCKETS = 10_000  # 0.01 % each


def bucket(seed: str, unit_id: str) -> int:
    """The unit's bucket in [0, 10_000): the first 8 bytes of SHA-256, big-endian, mod 10,000.

    SHA-256 rather than Python's ``hash`` (salted per process) or a fast
    non-cryptographic hash: it is identical in every language and version, so
    the assignment can be reproduced outside Keel. The modulo bias of 2**64
    over 10,000 buckets is below 1e-15.
    """
    digest = hashlib.sha256(f"{seed}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def _buckets(percent: float) -> int:
    return round(percent * BUCKETS / 100)


def ranges(experiment: Experiment, shares: Mapping[str, float]) -> list[tuple[str, int, int]]:
    """Each variant's buckets ``[lo, hi)``: candidates from 0 up in declared order, then control.

    ``shares`` are percent per variant name; a candidate left out has 0 %.
    Control takes whatever the candidates leave, so its own entry, if any,
    is not read. Every variant appears, possibly with an empty range; shares
    are rounded to whole buckets (0.01 %).
    """
    known = {v.name for v in experiment.variants}
    unknown = set(shares) - known
    if unknown:
        raise ValueError(f"shares name variants the experiment lacks: {sorted(unknown)}")
    candidates = [(v.name, shares.get(v.name, 0.0)) for v in experiment.candidates]
    for name, share in candidates:
        if share < 0:
            raise ValueError(f"share of {name!r} is negative: {share}")
    total = sum(share for _, share in candidates)
    if total > 100 + 1e-9:
        raise ValueError(f"candidates' shares add up to more than 100 %: {total:g} %")
    out: list[tuple[str, int, int]] = []
    lo = 0
    for name, share in candidates:
        hi = min(lo + _buckets(share), BUCKETS)  # rounding never overflows the space
        out.append((name, lo, hi))
        lo = hi
    out.append((experiment.control.name, lo, BUCKETS))
    return out


def assign(experiment: Experiment, shares: Mapping[str, float], unit_id: str) -> Variant:
    """The variant ``unit_id`` sees at these shares."""
    b = bucket(experiment.hash_seed, unit_id)
    name = next(name for name, lo, hi in ranges(experiment, shares) if lo <= b < hi)
    return next(v for v in experiment.variants if v.name == name)


def shares_at(experiment: Experiment, step_index: int = 0) -> dict[str, float]:
    """Percent per variant the experiment's mode gives, at ramp step ``step_index``.

    A split gives its shares; a ramp gives the candidate the step's percent
    and control the rest; shadow mode serves everyone control (mirroring is
    decided separately, per request).
    """
    control = experiment.control.name
    if experiment.split is not None:
        return dict(experiment.split)
    if experiment.ramp is not None:
        steps = experiment.ramp.steps
        if not 0 <= step_index < len(steps):
            raise ValueError(f"step {step_index} is outside the ramp's {len(steps)} steps")
        share = steps[step_index]
        return {experiment.candidates[0].name: share, control: 100 - share}
    return {control: 100.0, experiment.candidates[0].name: 0.0}


def eligible(experiment: Experiment, tenant: str, tier: str | None) -> bool:
    """Whether the tenant's requests take part, by the experiment's cohort.

    In order: a tenant in ``exclude_tenants`` never takes part; one in
    ``include_tenants`` always does (that is how a tenant on an opt-in tier
    opts in); a tenant on an ``opt_in_tiers`` tier does not; with ``tiers``
    set, only those tiers take part; with ``include_tenants`` set and no tier
    rule at all, the list is the whole cohort; otherwise everyone takes part.
    A tenant whose tier is unknown (None) matches no tier.
    """
    cohort = experiment.cohort
    if tenant in cohort.exclude_tenants:
        return False
    if tenant in cohort.include_tenants:
        return True
    if tier is not None and tier in cohort.opt_in_tiers:
        return False
    if cohort.tiers:
        return tier in cohort.tiers
    return not (cohort.include_tenants and not cohort.opt_in_tiers)


def unit_id(experiment: Experiment, tenant: str, user: str | None, request_id: str) -> str | None:
    """The id hashed for assignment, or None when the request cannot take part.

    ``tenant``: the tenant; ``request``: the request id (no stickiness);
    ``user``: ``"<tenant>/<user>"``, so equal end-user ids under different
    tenants are different units. A request with no end user in a ``user``
    experiment does not take part (None): it is served as if there were no
    experiment and is not counted. Falling back to the tenant would lump all
    its anonymous traffic into one giant unit, and falling back to the
    request would show one person both variants.
    """
    if experiment.unit == "tenant":
        return tenant
    if experiment.unit == "request":
        return request_id
    if not user:
        return None
    return f"{tenant}/{user}"

"""Routing: model aliases to deployments, with retries, deadlines, circuit
breakers and fallback chains.

Owns the decision of which upstream serves an attempt and what happens when
it fails. Imports ``keel.config``, ``keel.errors``, ``keel.tokens`` and
``keel.providers`` only; knows nothing of HTTP on the client side.
"""

from keel.routing.breaker import Admission, BreakerState, CircuitBreaker
from keel.routing.router import OpenedStream, Router, RouteResult, reachable_deployments

__all__ = [
    "Admission",
    "BreakerState",
    "CircuitBreaker",
    "OpenedStream",
    "RouteResult",
    "Router",
    "reachable_deployments",
]

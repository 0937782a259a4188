"""Keel's one error hierarchy.

Every failure Keel reports is a ``KeelError``. Each class carries the HTTP
status, a stable ``code``, the OpenAI error ``type`` clients expect, the fault
domain used for telemetry (``caller`` / ``policy`` / ``provider`` / ``keel``)
and whether trying again might help. ``keel.api.errors`` maps the tree to
OpenAI error bodies and ``keel.cli._base`` maps it to exit codes, each in one
place::

    KeelError                          500 keel_internal_error
    ├── ConfigError                    bad keel.yaml (CLI exit 2)
    ├── CallerError                    the request is wrong; never retried
    │   ├── InvalidRequest             400 invalid_request / invalid_json
    │   ├── AuthenticationFailed       401 invalid_api_key
    │   ├── PermissionDenied           403 permission_denied
    │   ├── ModelNotFound              404 model_not_found
    │   ├── NotFound                   404 not_found
    │   ├── MethodNotAllowed           405 method_not_allowed
    │   ├── PayloadTooLarge            413 payload_too_large
    │   └── ClientClosed               499 the client went away (recorded, never sent)
    ├── ProviderError                  one upstream attempt failed
    │   ├── UpstreamRejected           the upstream refused the request (4xx)
    │   │   └── ContextWindowExceeded  400 context_length_exceeded
    │   ├── UpstreamAuthError          502 the upstream refused Keel's credentials
    │   ├── UpstreamNotFound           502 the upstream has no such model or route
    │   ├── UpstreamRateLimited        429, retryable, may carry Retry-After
    │   ├── UpstreamUnavailable        5xx, retryable
    │   ├── UpstreamTimeout            attempt or stream idle timeout, retryable
    │   ├── UpstreamConnectError       could not connect, retryable
    │   ├── UpstreamProtocolError      the upstream answered nonsense, retryable
    │   └── StreamInterrupted          the stream broke after content was sent
    ├── PolicyError                    a tenant's limits or an operator refused it
    │   ├── TenantSuspended            403 tenant_suspended
    │   ├── ModelNotAllowed            403 model_not_allowed (the tier's aliases)
    │   ├── RateLimited                429 rate_limit_exceeded, with Retry-After
    │   └── BudgetExceeded             402 budget_exceeded (429 when configured)
    ├── RoutingError                   the request as a whole could not be served
    │   ├── AllUpstreamsFailed         502 every attempt failed
    │   ├── NoHealthyUpstream          503 every deployment's breaker is open
    │   └── DeadlineExceeded           504 the overall deadline passed
    ├── StoreError                     503 store_unavailable: the database failed
    └── LimitsUnavailable              503 limits_unavailable: the limits backend failed
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Fault = Literal["caller", "policy", "provider", "keel"]


class KeelError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "keel_internal_error"
    openai_type: ClassVar[str] = "server_error"
    fault: ClassVar[Fault] = "keel"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    @property
    def error_type(self) -> str:
        """The ``error.type`` value for telemetry: fault domain + code."""
        return f"{self.fault}_{self.code}"

    def body(self) -> dict[str, Any]:
        """The OpenAI error body for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "code": self.code,
                "param": self.param,
            }
        }


class ConfigError(KeelError):
    code = "invalid_config"
    fault = "caller"

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source


# --- caller -----------------------------------------------------------------


class CallerError(KeelError):
    status = 400
    code = "invalid_request"
    openai_type = "invalid_request_error"
    fault = "caller"


class InvalidRequest(CallerError):
    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message, param=param)
        if code is not None:
            self.code = code  # type: ignore[misc]  # per-instance refinement of the class code


class AuthenticationFailed(CallerError):
    status = 401
    code = "invalid_api_key"
    openai_type = "authentication_error"


class PermissionDenied(CallerError):
    status = 403
    code = "permission_denied"
    openai_type = "permission_error"


class ModelNotFound(CallerError):
    status = 404
    code = "model_not_found"
    openai_type = "invalid_request_error"


class NotFound(CallerError):
    status = 404
    code = "not_found"
    openai_type = "not_found_error"


class MethodNotAllowed(CallerError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(CallerError):
    status = 413
    code = "payload_too_large"


# nginx's status for a request the client abandoned; only ever recorded.
CLIENT_CLOSED = 499


class ClientClosed(CallerError):
    status = CLIENT_CLOSED
    code = "client_closed_request"

    def __init__(self) -> None:
        super().__init__("the client closed the connection before the answer was complete")


# --- policy -----------------------------------------------------------------


class PolicyError(KeelError):
    """The request is well formed, but a tenant's limits or an operator refuse it."""

    status = 403
    code = "policy_refused"
    openai_type = "permission_error"
    fault = "policy"


class TenantSuspended(PolicyError):
    code = "tenant_suspended"


class ModelNotAllowed(PolicyError):
    code = "model_not_allowed"


class RateLimited(PolicyError):
    """Over a rate or concurrency limit; ``limit`` names which one (``rpm per key``...)."""

    status = 429
    code = "rate_limit_exceeded"
    openai_type = "rate_limit_error"
    retryable = True

    def __init__(self, message: str, *, limit: str, retry_after_s: float | None) -> None:
        super().__init__(message, param=None)
        self.limit = limit
        self.retry_after_s = retry_after_s


class BudgetExceeded(PolicyError):
    """The request's maximum cost does not fit in what is left of a budget."""

    status = 402
    code = "budget_exceeded"
    openai_type = "insufficient_quota"

    def __init__(
        self, message: str, *, limit: str, retry_after_s: float | None, status: int = 402
    ) -> None:
        super().__init__(message, param=None)
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.status = status  # type: ignore[misc]  # 429 when the tier asks for it


# --- provider ---------------------------------------------------------------


class ProviderError(KeelError):
    """One upstream attempt failed; the router records which deployment it was."""

    status = 502
    code = "upstream_error"
    openai_type = "api_error"
    fault = "provider"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.upstream_status = upstream_status
        self.retry_after = retry_after


class UpstreamRejected(ProviderError):
    """The upstream refused the request itself; the caller sees its status."""

    code = "upstream_rejected"
    openai_type = "invalid_request_error"

    @property
    def http_status(self) -> int:
        return self.upstream_status or 400


class ContextWindowExceeded(UpstreamRejected):
    code = "context_length_exceeded"


class UpstreamAuthError(ProviderError):
    """401/403 from the upstream: the deployment's key is wrong, not the caller's."""

    code = "upstream_auth_error"


class UpstreamNotFound(ProviderError):
    """404 from the upstream: a wrong model name or base URL in keel.yaml, not the caller's."""

    code = "upstream_not_found"


class UpstreamRateLimited(ProviderError):
    code = "upstream_rate_limited"
    openai_type = "rate_limit_error"
    retryable = True


class UpstreamUnavailable(ProviderError):
    code = "upstream_unavailable"
    retryable = True


class UpstreamTimeout(ProviderError):
    code = "upstream_timeout"
    openai_type = "timeout_error"
    retryable = True


class UpstreamConnectError(ProviderError):
    code = "upstream_connect_error"
    retryable = True


class UpstreamProtocolError(ProviderError):
    code = "upstream_protocol_error"
    retryable = True


class StreamInterrupted(ProviderError):
    """The upstream stream broke after content reached the client."""

    code = "stream_interrupted"


# --- routing ----------------------------------------------------------------


# Attempt outcomes recorded for deployments passed over without a call.
SKIPPED_OUTCOMES = frozenset({"breaker_open", "context_skipped"})


@dataclass(frozen=True, slots=True)
class AttemptSummary:
    """One upstream attempt, as reported in routing errors and traces."""

    alias: str
    deployment: str
    outcome: str  # "ok" or an error code
    status: int | None
    latency_ms: float
    started: float = 0.0  # monotonic clock; places the attempt on the request's timeline

    def describe(self) -> str:
        status = f" {self.status}" if self.status else ""
        return f"{self.deployment} ({self.alias}): {self.outcome}{status}"


class RoutingError(KeelError):
    fault = "provider"

    def __init__(self, message: str, attempts: list[AttemptSummary]) -> None:
        super().__init__(message)
        self.attempts = attempts

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["attempts"] = [
            {
                "alias": a.alias,
                "deployment": a.deployment,
                "outcome": a.outcome,
                "status": a.status,
                "latency_ms": round(a.latency_ms, 1),
            }
            for a in self.attempts
        ]
        return body

    @staticmethod
    def summarize(attempts: list[AttemptSummary]) -> str:
        if not attempts:
            return "no attempt was made"
        return "; ".join(a.describe() for a in attempts)


class AllUpstreamsFailed(RoutingError):
    status = 502
    code = "all_upstreams_failed"
    openai_type = "api_error"


class NoHealthyUpstream(RoutingError):
    status = 503
    code = "no_healthy_upstream"
    openai_type = "api_error"


class DeadlineExceeded(RoutingError):
    status = 504
    code = "deadline_exceeded"
    openai_type = "timeout_error"


# --- store ------------------------------------------------------------------


class StoreError(KeelError):
    """The database could not be reached, migrated or queried.

    ``message`` is the operator's detail: what failed, on which database
    (password redacted) and the driver's words, e.g. ``no such table``. It is
    for logs and the CLI, never for clients, since it maps the deployment for
    anyone probing it; it never carries a key. Clients get ``CLIENT_MESSAGE``,
    one fixed sentence, which is what :meth:`body` sends.
    """

    status = 503
    code = "store_unavailable"
    openai_type = "api_error"
    retryable = True
    CLIENT_MESSAGE: ClassVar[str] = "the key store is unavailable"

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["message"] = self.CLIENT_MESSAGE
        return body


class LimitsUnavailable(KeelError):
    """The limits backend (Redis) failed: refuse rather than quietly stop limiting.

    Like ``StoreError``, ``message`` names the server for the operator's log;
    clients get one fixed sentence.
    """

    status = 503
    code = "limits_unavailable"
    openai_type = "api_error"
    retryable = True
    CLIENT_MESSAGE: ClassVar[str] = "the limits backend is unavailable"

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["message"] = self.CLIENT_MESSAGE
        return body


def http_status(error: KeelError) -> int:
    """The status a client sees for ``error``."""
    if isinstance(error, UpstreamRejected):
        return error.http_status
    return error.status

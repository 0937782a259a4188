"""The SDK's errors, placed in Keel's one tree (``keel.errors``).

Every one also derives from the :class:`PromptError` marker, so an
application can catch the SDK's failures with one ``except`` clause::

    PromptError (marker)
    ├── PromptNotFound      NotFound              404: no such prompt, label or version
    ├── PromptAuthError     AuthenticationFailed  401/403: the gateway refused the key
    ├── PromptRequestError  InvalidRequest        any other 4xx from the gateway
    └── PromptUnavailable   UpstreamUnavailable   unreachable (connection, timeout,
                                                  5xx), and no version is known

A 4xx is the caller's mistake and is always raised, never hidden behind a
cached version. Only an unreachable gateway falls back to the last known one.
Messages never carry the API key.
"""

from __future__ import annotations

from typing import Any

from keel.errors import AuthenticationFailed, InvalidRequest, NotFound, UpstreamUnavailable


class PromptError(Exception):
    """Marker base of every error the prompt SDK raises.

    ``prompt`` is the prompt's name; ``status_code`` the HTTP status the
    gateway answered, or ``None`` when it did not answer.
    """

    prompt: str
    status_code: int | None


class PromptNotFound(PromptError, NotFound):
    """The gateway has no such prompt, or the prompt has no such label or version."""


class PromptAuthError(PromptError, AuthenticationFailed):
    """The gateway refused the API key (401) or its permissions (403)."""


class PromptRequestError(PromptError, InvalidRequest):
    """The gateway refused the request for another reason (a 4xx other than 401/403/404)."""


class PromptUnavailable(PromptError, UpstreamUnavailable):
    """The gateway could not be reached and no version of the reference is known.

    ``cause`` says what failed: the connection, a timeout, or the gateway's 5xx.
    """

    def __init__(self, message: str, *, prompt: str, cause: str, status_code: int | None) -> None:
        super().__init__(message, upstream_status=status_code)
        self.prompt = prompt
        self.cause = cause
        self.status_code = status_code


# The one translation table: the gateway's 4xx status -> the SDK's error.
_BY_STATUS: dict[int, type[PromptNotFound | PromptAuthError]] = {
    401: PromptAuthError,
    403: PromptAuthError,
    404: PromptNotFound,
}


def refused(
    *, prompt: str, where: str, status: int, error: dict[str, Any]
) -> PromptNotFound | PromptAuthError | PromptRequestError:
    """The error for a gateway's 4xx answer; ``error`` is its (already redacted) error object."""
    message = str(error.get("message") or "no message")
    code = error.get("code")
    text = f"{where}: the gateway answered {status}{f' {code}' if code else ''}: {message}"
    param = error.get("param") if isinstance(error.get("param"), str) else None
    cls = _BY_STATUS.get(status)
    result: PromptNotFound | PromptAuthError | PromptRequestError
    if cls is None:
        result = PromptRequestError(text, param=param, code=str(code) if code else None)
    else:
        result = cls(text, param=param)
    result.prompt = prompt
    result.status_code = status
    return result

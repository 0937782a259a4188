"""``PromptClient`` (sync) and ``AsyncPromptClient``: one GET each, the rest is shared.

Both wrap :class:`~keel.sdk._cache.PromptCache`; they differ only in how they
send the request and in ``close`` / ``aclose``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from keel.sdk._cache import PromptCache
from keel.sdk._types import FetchedPrompt, Ref


def render_messages(fetched: FetchedPrompt, variables: Mapping[str, Any]) -> list[dict[str, str]]:
    """Validate ``variables`` against the fetched prompt, then render its messages."""
    from keel.prompts import render  # Jinja2 loads with the first render, not on import

    return render(fetched.prompt, variables)


class _Client:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        ttl_s: float,
        timeout_s: float,
        cache_dir: str | Path | None,
        retry_s: float,
        clock: Callable[[], float] | None,
    ) -> None:
        self._cache = PromptCache(
            base_url,
            api_key,
            ttl_s=ttl_s,
            retry_s=retry_s,
            cache_dir=cache_dir,
            clock=clock or time.monotonic,
        )
        self._timeout = timeout_s

    def reference(
        self,
        name: str,
        variables: Mapping[str, Any],
        *,
        label: str | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """``{"prompt": {...}}`` for the OpenAI SDK's ``extra_body``: the gateway renders it.

        Nothing is fetched; the gateway validates the variables (422 naming
        the bad one). Without a label or version, the label is ``production``.
        """
        return {"prompt": Ref.of(name, label, version).body(variables)}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self._cache.base_url!r},"
            f" ttl_s={self._cache.ttl_s!r}, timeout_s={self._timeout!r})"
        )


class PromptClient(_Client):
    """Fetches prompts from a Keel gateway (``GET /v1/prompts/{name}``), with a cache.

    ``base_url`` is the gateway (``http://localhost:8080``; a trailing
    ``/v1`` is fine). ``api_key`` is any virtual key. A label is asked again
    after ``ttl_s``; an exact version is kept for good. When the gateway is
    unreachable the last known version is served with ``stale=True``; with
    ``cache_dir`` it is also kept on disk for the next process. ``http_client``
    lets you bring your own ``httpx.Client`` (proxies, event hooks); it is
    then yours to close. ``clock`` (monotonic seconds) is for tests.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        ttl_s: float = 60.0,
        timeout_s: float = 2.0,
        cache_dir: str | Path | None = None,
        retry_s: float = 5.0,
        http_client: httpx.Client | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            ttl_s=ttl_s,
            timeout_s=timeout_s,
            cache_dir=cache_dir,
            retry_s=retry_s,
            clock=clock,
        )
        self._http = http_client or httpx.Client()
        self._owns_http = http_client is None

    def get(
        self, name: str, *, label: str | None = None, version: str | None = None
    ) -> FetchedPrompt:
        """The version ``label`` (default ``production``) points at, or ``version`` itself.

        Raises ``PromptNotFound`` / ``PromptAuthError`` / ``PromptRequestError``
        for the gateway's 4xx, and ``PromptUnavailable`` when the gateway is
        unreachable and no version of the reference is known.
        """
        ref = Ref.of(name, label, version)
        cached = self._cache.fresh(ref)
        if cached is not None:
            return cached
        url, params, headers = self._cache.request(ref)
        try:
            response = self._http.get(url, params=params, headers=headers, timeout=self._timeout)
        except httpx.RequestError as exc:  # connection refused, timeout, broken answer
            return self._cache.unreachable(ref, exc)
        return self._cache.answer(ref, response)

    def render(
        self,
        name: str,
        variables: Mapping[str, Any],
        *,
        label: str | None = None,
        version: str | None = None,
    ) -> list[dict[str, str]]:
        """Fetch the prompt, validate ``variables`` and render its chat messages locally.

        Raises what :meth:`get` raises, and ``PromptVariablesInvalid`` naming
        each bad variable.
        """
        return render_messages(self.get(name, label=label, version=version), variables)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncPromptClient(_Client):
    """:class:`PromptClient` on ``httpx.AsyncClient``: the same cache, the same errors."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        ttl_s: float = 60.0,
        timeout_s: float = 2.0,
        cache_dir: str | Path | None = None,
        retry_s: float = 5.0,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            ttl_s=ttl_s,
            timeout_s=timeout_s,
            cache_dir=cache_dir,
            retry_s=retry_s,
            clock=clock,
        )
        self._http = http_client or httpx.AsyncClient()
        self._owns_http = http_client is None

    async def get(
        self, name: str, *, label: str | None = None, version: str | None = None
    ) -> FetchedPrompt:
        """See :meth:`PromptClient.get`."""
        ref = Ref.of(name, label, version)
        cached = self._cache.fresh(ref)
        if cached is not None:
            return cached
        url, params, headers = self._cache.request(ref)
        try:
            response = await self._http.get(
                url, params=params, headers=headers, timeout=self._timeout
            )
        except httpx.RequestError as exc:
            return self._cache.unreachable(ref, exc)
        return self._cache.answer(ref, response)

    async def render(
        self,
        name: str,
        variables: Mapping[str, Any],
        *,
        label: str | None = None,
        version: str | None = None,
    ) -> list[dict[str, str]]:
        """See :meth:`PromptClient.render`."""
        return render_messages(await self.get(name, label=label, version=version), variables)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

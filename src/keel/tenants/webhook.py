"""Alert delivery by HTTP: one JSON POST per event to the configured webhook."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from keel.config import WebhookConfig
from keel.tenants.alerts import Event

if TYPE_CHECKING:
    import aiohttp


class WebhookSink:
    """POSTs ``{"event": {...}}``; a non-2xx answer or a timeout raises (and is logged)."""

    def __init__(self, config: WebhookConfig) -> None:
        self._url = config.url
        self._headers = {
            "content-type": "application/json",
            **{k: v.get_secret_value() for k, v in config.headers.items()},
        }
        self._timeout_s = config.timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, event: Event) -> None:
        if self._session is None:
            import aiohttp  # loaded with the first alert, not at start

            timeout = aiohttp.ClientTimeout(total=self._timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        body = orjson.dumps({"event": event.as_dict()})
        async with self._session.post(self._url, data=body, headers=self._headers) as response:
            if response.status >= 300:
                # The URL may carry a token; the status is enough to act on.
                raise RuntimeError(f"webhook answered HTTP {response.status}")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

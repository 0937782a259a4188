"""The caching logic both clients share; it never touches the network.

A client asks :meth:`PromptCache.fresh` first; on a miss it sends the
request that :meth:`PromptCache.request` describes and hands the outcome to
:meth:`PromptCache.answer` (a response) or :meth:`PromptCache.unreachable`
(a transport error). So the sync and the async client differ only in how
they send one GET.

Policy:

- a label is asked again once ``ttl_s`` has passed; an exact version never
  changes, so it is kept for good (a label's answer also fills its version);
- unreachable (connection error, timeout, 5xx, an answer that is not a
  prompt): the last known version is served with ``stale=True`` and the
  gateway is asked again after ``retry_s``, so an outage does not cost a
  timeout per call; with nothing known, :class:`PromptUnavailable`;
- a 4xx is raised as it is, whatever the cache holds;
- one warning per outage, one info line when the gateway answers again.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from keel.sdk._disk import DiskCache
from keel.sdk._types import FetchedPrompt, Ref
from keel.sdk.errors import PromptUnavailable, refused

log = logging.getLogger("keel.sdk")

REDACTED = "sk-keel-…(redacted)"


class Secret:
    """The API key: its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        return text.replace(self._value, REDACTED) if self._value else text

    def __repr__(self) -> str:
        return repr(REDACTED)

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class _Entry:
    fetched: FetchedPrompt
    expires: float  # on the cache's clock; math.inf for an exact version


class _Unusable(Exception):
    """A 2xx whose body is not the prompt asked for: treated like an outage."""


class PromptCache:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        ttl_s: float,
        retry_s: float,
        cache_dir: str | Path | None,
        clock: Callable[[], float],
    ) -> None:
        if ttl_s < 0 or retry_s < 0:
            raise ValueError("ttl_s and retry_s must not be negative")
        self.base_url = _root(base_url)
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self._key = Secret(api_key)
        self._clock = clock
        self._disk = DiskCache(Path(cache_dir)) if cache_dir is not None else None
        self._entries: dict[Ref, _Entry] = {}
        self._saved: dict[Ref, str] = {}  # what cache_dir holds: content hash per reference
        self._outage: str | None = None  # the cause, while the gateway is unreachable
        self._lock = threading.Lock()  # never held across I/O

    def fresh(self, ref: Ref) -> FetchedPrompt | None:
        """The cached answer for ``ref`` if it need not be asked again yet."""
        entry = self._entries.get(ref)
        if entry is not None and self._clock() < entry.expires:
            return entry.fetched
        return None

    def request(self, ref: Ref) -> tuple[str, dict[str, str], dict[str, str]]:
        """URL, query params and headers of the GET that fetches ``ref``."""
        headers = {"authorization": f"Bearer {self._key.reveal()}", "accept": "application/json"}
        return self.base_url + ref.path(), ref.query(), headers

    def answer(self, ref: Ref, response: httpx.Response) -> FetchedPrompt:
        """The gateway answered: cache and return the prompt, or raise its 4xx."""
        status = response.status_code
        if 400 <= status < 500:
            self._reachable()  # it answered: the outage, if any, is over
            raise refused(
                prompt=ref.name, where=f"prompt {ref}", status=status, error=self._error(response)
            )
        if not 200 <= status < 300:
            return self.unreachable(ref, self._describe(response), status_code=status)
        try:
            fetched = self._parse(ref, response)
        except _Unusable as exc:
            return self.unreachable(ref, str(exc), status_code=status)
        self._store(ref, fetched)
        return fetched

    def unreachable(
        self, ref: Ref, cause: str | Exception, *, status_code: int | None = None
    ) -> FetchedPrompt:
        """No usable answer: the last known version, stale, or :class:`PromptUnavailable`."""
        reason = self._key.redact(cause if isinstance(cause, str) else _exception(cause))
        with self._lock:
            first, self._outage = self._outage is None, reason
        if first:
            log.warning(
                "the prompt registry at %s is unreachable (%s); serving last known versions",
                self.base_url,
                reason,
            )
        entry = self._entries.get(ref)
        known = entry.fetched if entry is not None else self._from_disk(ref)
        if known is None:
            where = " or in cache_dir" if self._disk is not None else ""
            raise PromptUnavailable(
                f"prompt {ref} is unavailable: no usable answer from the gateway at"
                f" {self.base_url} ({reason}), and no version of it is known in this"
                f" process{where}",
                prompt=ref.name,
                cause=reason,
                status_code=status_code,
            )
        stale = replace(known, stale=True)
        with self._lock:
            self._entries[ref] = _Entry(stale, self._clock() + self.retry_s)
        return stale

    def _from_disk(self, ref: Ref) -> FetchedPrompt | None:
        if self._disk is None:
            return None
        found = self._disk.load(ref)
        if found is not None and not _matches(ref, found):
            log.warning(
                "ignoring cached prompt %s: the file holds %s %s", ref, found.name, found.version
            )
            return None
        return found

    def _store(self, ref: Ref, fetched: FetchedPrompt) -> None:
        now = self._clock()
        answers = [(ref, fetched, math.inf if ref.pinned else now + self.ttl_s)]
        if not ref.pinned:  # the version it points at is immutable: keep it for good
            answers.append(
                (Ref(ref.name, version=fetched.version), replace(fetched, label=None), math.inf)
            )
        with self._lock:
            for key, value, expires in answers:
                self._entries[key] = _Entry(value, expires)
            # Written when it changes, not on every fetch: once per reference and version.
            unsaved = [(k, v) for k, v, _ in answers if self._saved.get(k) != v.content_hash]
            self._saved.update((k, v.content_hash) for k, v in unsaved)
        self._reachable()
        if self._disk is not None:
            for key, value in unsaved:
                self._disk.save(key, value)

    def _reachable(self) -> None:
        with self._lock:
            recovered, self._outage = self._outage is not None, None
        if recovered:
            log.info("the prompt registry at %s answers again", self.base_url)

    def _parse(self, ref: Ref, response: httpx.Response) -> FetchedPrompt:
        try:
            fetched = FetchedPrompt.from_json(
                orjson.loads(response.content), fetched_at=datetime.now(UTC)
            )
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise _Unusable(f"HTTP {response.status_code} is not a prompt: {exc}") from None
        if not _matches(ref, fetched):
            raise _Unusable(f"asked for {ref}, got {fetched.name} {fetched.version}")
        if not ref.pinned:  # the answer's label is what was asked; the SDK sets it
            fetched = replace(fetched, label=ref.label)
        return fetched

    def _error(self, response: httpx.Response) -> dict[str, Any]:
        """The OpenAI-shaped ``error`` object of an answer, redacted; made up when absent."""
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            error = {"message": response.text[:200] or response.reason_phrase}
        return {k: self._key.redact(v) if isinstance(v, str) else v for k, v in error.items()}

    def _describe(self, response: httpx.Response) -> str:
        error = self._error(response)
        code = f" {error['code']}" if error.get("code") else ""
        return f"HTTP {response.status_code}{code}: {error.get('message')}"


def _root(base_url: str) -> str:
    """The gateway's root URL; the OpenAI SDK's ``.../v1`` is accepted too."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def _matches(ref: Ref, fetched: FetchedPrompt) -> bool:
    return fetched.name == ref.name and (not ref.pinned or fetched.version == ref.version)


def _exception(exc: Exception) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__

"""What the SDK hands out and what it is asked for: a fetched prompt and a reference."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from keel.errors import InvalidRequest
from keel.prompts.model import PromptFile

# What a reference without a label or version means (the gateway's default too).
DEFAULT_LABEL = "production"


@dataclass(frozen=True, slots=True)
class FetchedPrompt:
    """One prompt version, as the gateway served it.

    ``label`` is the label it was fetched by (``None`` when fetched by
    version). ``stale`` is true when the gateway could not be reached and
    this is the last version known for the reference, fetched at
    ``fetched_at`` (UTC).
    """

    name: str
    version: str
    content_hash: str
    label: str | None
    prompt: PromptFile
    fetched_at: datetime
    stale: bool = False

    def to_json(self) -> dict[str, Any]:
        """The gateway's answer, plus ``fetched_at``: what ``cache_dir`` holds."""
        return {
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "label": self.label,
            "prompt": self.prompt.model_dump(mode="json"),
            "fetched_at": self.fetched_at.isoformat(),
        }

    @classmethod
    def from_json(
        cls, data: Any, *, fetched_at: datetime | None = None, stale: bool = False
    ) -> FetchedPrompt:
        """Read the gateway's answer (or a cached one). Raises ``ValueError`` when malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("expected a JSON object")
        fields = {key: data.get(key) for key in ("name", "version", "content_hash")}
        missing = [key for key, value in fields.items() if not isinstance(value, str)]
        if missing:
            raise ValueError(f"missing or not a string: {', '.join(missing)}")
        label = data.get("label")
        when = fetched_at or datetime.fromisoformat(str(data.get("fetched_at")))
        return cls(
            name=str(fields["name"]),
            version=str(fields["version"]),
            content_hash=str(fields["content_hash"]),
            label=label if isinstance(label, str) else None,
            prompt=PromptFile.model_validate(data.get("prompt")),  # ValidationError is a ValueError
            fetched_at=when,
            stale=stale,
        )


@dataclass(frozen=True, slots=True)
class Ref:
    """A prompt by label or by exact version; exactly one of the two is set."""

    name: str
    label: str | None = None
    version: str | None = None

    @classmethod
    def of(cls, name: str, label: str | None, version: str | None) -> Ref:
        if not name:
            raise InvalidRequest("a prompt name is required", param="name")
        if label is not None and version is not None:
            raise InvalidRequest("give a label or a version, not both", param="version")
        if version is not None:
            return cls(name, version=version)
        return cls(name, label=label or DEFAULT_LABEL)

    @property
    def pinned(self) -> bool:
        """An exact version: immutable, so it is cached for good."""
        return self.version is not None

    def query(self) -> dict[str, str]:
        return {"version": self.version} if self.version is not None else {"label": str(self.label)}

    def path(self) -> str:
        return f"/v1/prompts/{quote(self.name, safe='')}"

    def file_name(self) -> str:
        """A file name that no other reference shares and that cannot leave its folder."""
        kind, value = next(iter(self.query().items()))
        return f"{quote(self.name, safe='')}@{kind}={quote(value, safe='')}.json"

    def body(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        """The request's ``prompt`` object: name, label or version, variables."""
        return {"name": self.name, **self.query(), "variables": dict(variables)}

    def __str__(self) -> str:
        kind, value = next(iter(self.query().items()))
        return f"{self.name} ({kind} {value})"

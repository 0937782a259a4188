"""The prompt registry's records: versions, labels, label moves, push results, summaries.

Plain frozen values, JSON-ready through ``as_dict``; ``keel.store.prompts``
reads and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from keel.prompts.model import PromptFile

MoveKind = Literal["promote", "rollback"]
PushStatus = Literal["new", "unchanged"]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(frozen=True, slots=True)
class PromptVersion:
    """One pushed version. ``content`` is :func:`keel.prompts.model.content_of` of the file."""

    id: int
    name: str
    version: str
    content_hash: str
    content: dict[str, Any]
    description: str
    owner: str | None
    tags: list[str]
    created_at: datetime
    created_by: str

    def prompt(self) -> PromptFile:
        """The prompt file this version was pushed from."""
        return PromptFile.model_validate(
            {
                **self.content,
                "description": self.description,
                "owner": self.owner,
                "tags": self.tags,
            }
        )

    def as_dict(self, *, content: bool = True) -> dict[str, Any]:
        """JSON-ready, for the CLI and the admin API; ``content=False`` for listings."""
        data: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "description": self.description,
            "owner": self.owner,
            "tags": list(self.tags),
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
        }
        if content:
            data["content"] = self.content
        return data


@dataclass(frozen=True, slots=True)
class PromptLabel:
    name: str
    label: str
    version: str
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "version": self.version,
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class LabelMove:
    """One label move: who moved which label from what to what, when, why, on which eval run."""

    id: int
    name: str
    label: str
    from_version: str | None  # None: the label did not exist before
    to_version: str
    at: datetime
    actor: str
    reason: str | None
    eval_run_id: int | None  # the passing run that qualified ``to_version``
    forced: bool  # promoted with --force, past the eval gate
    kind: MoveKind

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "label": self.label,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "at": _iso(self.at),
            "actor": self.actor,
            "reason": self.reason,
            "eval_run_id": self.eval_run_id,
            "forced": self.forced,
            "kind": self.kind,
        }


@dataclass(frozen=True, slots=True)
class PushResult:
    name: str
    version: str
    content_hash: str
    status: PushStatus  # new: stored now; unchanged: already stored with this content

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class PromptSummary:
    """A prompt in listings: how many versions, the highest, and its labels."""

    name: str
    versions: int
    latest: str
    labels: dict[str, str]  # label -> version
    updated_at: datetime  # when its newest version was pushed

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": self.versions,
            "latest": self.latest,
            "labels": dict(self.labels),
            "updated_at": _iso(self.updated_at),
        }

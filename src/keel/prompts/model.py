"""The prompt file: one prompt version as reviewed YAML, and its identity.

A prompt lives in git as ``prompts/<name>.yaml``. What it *is* — the thing a
version number names and a content hash pins — is every field below except
``description``, ``owner`` and ``tags``, which describe it without changing
what the gateway sends. Two files with the same content hash render the
same messages with the same params for the same variables.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,127}"
# semver 2.0.0: MAJOR.MINOR.PATCH with optional pre-release and build metadata.
SEMVER_PATTERN = (
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_SEMVER = re.compile(SEMVER_PATTERN)

Role = Literal["system", "developer", "user", "assistant"]
VariableType = Literal["string", "integer", "number", "boolean", "list", "object"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MessageTemplate(_Strict):
    role: Role
    content: Annotated[str, Field(min_length=1)]  # a template: {{ variable }}


class VariableSpec(_Strict):
    """One variable a prompt takes: its type and what values it accepts."""

    type: VariableType = "string"
    required: bool = True
    default: Any = None  # used when an optional variable is not given
    description: str | None = None
    min_length: Annotated[int, Field(ge=0)] | None = None  # strings and lists
    max_length: Annotated[int, Field(ge=0)] | None = None
    enum: list[Any] | None = None
    minimum: float | None = None  # integers and numbers
    maximum: float | None = None


class PromptFile(_Strict):
    name: Annotated[str, Field(pattern=f"^{NAME_PATTERN}$")]
    version: Annotated[str, Field(pattern=f"^{SEMVER_PATTERN}$")]
    description: str = ""
    owner: str | None = None
    model: Annotated[str, Field(min_length=1)]  # a Keel alias
    # Request params sent with the rendered messages: temperature, max_tokens, ...
    params: dict[str, Any] = {}
    # Params a request may set itself, overriding the prompt's.
    overridable: list[str] = ["temperature", "max_tokens", "top_p", "stop", "seed", "user"]
    messages: Annotated[list[MessageTemplate], Field(min_length=1)]
    variables: dict[str, VariableSpec] = {}
    output_schema: dict[str, Any] | None = None  # JSON Schema the answer must follow
    tags: list[str] = []

    @field_validator("params")
    @classmethod
    def _no_messages_in_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        for reserved in ("messages", "model", "stream"):
            if reserved in params:
                raise ValueError(f"{reserved!r} is not a param: the prompt sets it")
        return params


def semver(version: str) -> tuple[int, int, int]:
    """MAJOR, MINOR, PATCH of a valid version (pre-release and build ignored)."""
    match = _SEMVER.fullmatch(version)
    if match is None:
        raise ValueError(f"not a semver version: {version!r}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def content_of(prompt: PromptFile) -> dict[str, Any]:
    """What a version pins: everything that changes what the gateway sends."""
    return prompt.model_dump(mode="json", exclude={"description", "owner", "tags"})


def content_hash(prompt: PromptFile) -> str:
    """``sha256:`` + hex digest of the canonical JSON of :func:`content_of`."""
    return "sha256:" + hashlib.sha256(_canonical(content_of(prompt))).hexdigest()


def variables_shape(prompt: PromptFile) -> dict[str, Any]:
    """The variables' contract with callers; changing it needs a major version."""
    return {
        name: {"type": spec.type, "required": spec.required and spec.default is None}
        for name, spec in sorted(prompt.variables.items())
    }

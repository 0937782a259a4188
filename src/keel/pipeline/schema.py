"""The OpenAI request shapes Keel checks before anything else runs.

Only the fields Keel itself reads or that a client commonly gets wrong are
typed; every other field passes through to the upstream untouched. The
original dict is forwarded, not a re-serialised model, so nothing the client
sent is reordered or dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
)

from keel.config import format_path
from keel.errors import InvalidRequest

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(_Open):
    role: Role
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(_Open):
    include_usage: StrictBool = False


class PromptRef(BaseModel):
    """A registry prompt to render in place of (or ahead of) ``messages``."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1)]
    label: Annotated[str, Field(min_length=1)] | None = None
    version: Annotated[str, Field(min_length=1)] | None = None
    variables: dict[str, Any] = {}


# Strict: the original value is what goes upstream, so "stream": "yes" must be
# refused here rather than read as True by Keel and as something else upstream.
class ChatRequest(_Open):
    # Both come from the prompt when one is named; required otherwise.
    model: Annotated[str, Field(min_length=1)] | None = None
    # May be empty when a prompt supplies the messages (the OpenAI SDK always sends it).
    messages: list[Message] | None = None
    prompt: PromptRef | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2, strict=True)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1, strict=True)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None


class EmbeddingsRequest(_Open):
    model: Annotated[str, Field(min_length=1)]
    input: str | list[str] | list[int] | list[list[int]]
    user: str | None = None
    metadata: dict[str, str] | None = None
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None


T = TypeVar("T")

_CHAT = TypeAdapter(ChatRequest)
_EMBEDDINGS = TypeAdapter(EmbeddingsRequest)

# Keel's own request fields, consumed here and never forwarded upstream.
KEEL_FIELDS = frozenset({"metadata", "prompt"})


def upstream_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without Keel's own fields: what an upstream may see.

    ``body`` itself when it has none, the usual case: no copy per request.
    Stages that change the upstream body build a new dict, never edit it.
    """
    if KEEL_FIELDS.isdisjoint(body):
        return body
    return {k: v for k, v in body.items() if k not in KEEL_FIELDS}


def validate_chat(body: dict[str, Any]) -> ChatRequest:
    chat = _validate(_CHAT, body)
    if chat.prompt is None:
        for name in ("model", "messages"):
            if getattr(chat, name) is None:
                raise InvalidRequest(f"{name}: required field is missing", param=name)
        if not chat.messages:
            raise InvalidRequest(
                "messages: at least one message is needed (or a prompt)", param="messages"
            )
    elif chat.prompt.label is not None and chat.prompt.version is not None:
        raise InvalidRequest("prompt: give a label or a version, not both", param="prompt.version")
    return chat


def validate_embeddings(body: dict[str, Any]) -> EmbeddingsRequest:
    return _validate(_EMBEDDINGS, body)


def _validate(adapter: TypeAdapter[T], body: dict[str, Any]) -> T:
    try:
        return adapter.validate_python(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        # Union members add their type name to the path; the client never wrote it.
        loc = tuple(p for p in error["loc"] if not _is_type_tag(p))
        param = format_path(loc)
        if error["type"] == "missing":
            message = f"{param}: required field is missing"
        else:
            message = f"{param}: {error['msg']}"
        raise InvalidRequest(message, param=param) from None


def _is_type_tag(part: Any) -> bool:
    return isinstance(part, str) and (
        part.startswith(("list[", "dict[")) or part in {"str", "int", "function-after"}
    )

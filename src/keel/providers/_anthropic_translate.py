"""Pure translation between the OpenAI chat shape and Anthropic's Messages API.

No I/O here: request in, request out; response in, response out; and a small
state machine that turns Anthropic stream events into OpenAI chunks. Anything
the Messages API cannot express faithfully is refused with a 400 naming the
parameter, rather than dropped and left to change the answer silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from keel.errors import InvalidRequest

Json = dict[str, Any]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Parameters whose effect the Messages API cannot reproduce. Each entry says
# when a value actually asks for something (defaults are harmless).
_UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v not in (None, 1),
    "logprobs": bool,
    "top_logprobs": lambda v: v is not None,
    "logit_bias": bool,
    "presence_penalty": bool,
    "frequency_penalty": bool,
    "audio": lambda v: v is not None,
}


# --- request ----------------------------------------------------------------


def to_anthropic_request(body: Json, *, model: str, default_max_tokens: int) -> Json:
    """Translate an OpenAI chat request body to a Messages API body (without ``stream``)."""
    for param, asks in _UNSUPPORTED.items():
        if param in body and asks(body[param]):
            raise InvalidRequest(f"'{param}' is not supported by Anthropic models", param=param)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", param="messages")
    system, turns = _messages(messages)
    instruction = _format_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)

    out: Json = {"model": model, "messages": turns}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = limit or default_max_tokens  # required by Anthropic
    if system:
        out["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _messages(messages: list[Any]) -> tuple[list[str], list[Json]]:
    """Split out the system text and build strictly alternating turns."""
    system: list[str] = []
    turns: list[Json] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest("each message must be an object", param=f"messages[{i}]")
        role = message.get("role")
        # Anthropic has one top-level system prompt; mid-conversation system
        # messages are hoisted into it, in order.
        if role in ("system", "developer"):
            system.append(_text_only(message.get("content"), f"messages[{i}].content"))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), f"messages[{i}].content")
        elif role == "assistant":
            blocks = _assistant_blocks(message, i)
        elif role == "tool":
            blocks = [_tool_result(message, i)]
        else:
            raise InvalidRequest(
                f"message role {role!r} is not supported by Anthropic models",
                param=f"messages[{i}].role",
            )
        turn_role = "assistant" if role == "assistant" else "user"
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)  # tool results + user text share a turn
        else:
            turns.append({"role": turn_role, "content": blocks})
    return system, turns


def _text_only(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidRequest("only text parts are allowed here", param=f"{where}[{j}]")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    if content is None:
        return ""
    raise InvalidRequest("content must be a string or a list of parts", param=where)


def _user_blocks(content: Any, where: str) -> list[Json]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or a list of parts", param=where)
    blocks: list[Json] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), f"{where}[{j}]"))
        else:
            raise InvalidRequest(
                f"content part type {kind!r} is not supported by Anthropic models",
                param=f"{where}[{j}].type",
            )
    return blocks


def _image(image: Any, where: str) -> Json:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequest("image_url needs a url", param=f"{where}.image_url")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise InvalidRequest(
                "image data URLs must be base64-encoded", param=f"{where}.image_url.url"
            )
        source: Json = {"type": "base64", "media_type": media_type, "data": data}
    else:
        source = {"type": "url", "url": url}
    return {"type": "image", "source": source}


def _assistant_blocks(message: Json, i: int) -> list[Json]:
    content = message.get("content")
    blocks: list[Json] = []
    if isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("text", "refusal"):
                raise InvalidRequest(
                    "assistant content parts must be text", param=f"messages[{i}].content[{j}]"
                )
            text = part.get(kind)
            if text:
                blocks.append({"type": "text", "text": text})
    elif content:
        blocks.append({"type": "text", "text": _text_only(content, f"messages[{i}].content")})
    for j, call in enumerate(message.get("tool_calls") or ()):
        where = f"messages[{i}].tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest("a tool call needs a function name", param=where)
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "tool call arguments must be a JSON object", param=f"{where}.function.arguments"
            ) from None
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": function["name"], "input": arguments}
        )
    return blocks


def _tool_result(message: Json, i: int) -> Json:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise InvalidRequest("a tool message needs tool_call_id", param=f"messages[{i}]")
    text = _text_only(message.get("content"), f"messages[{i}].content")
    return {"type": "tool_result", "tool_use_id": call_id, "content": text}


def _tool(tool: Any, i: int) -> Json:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function":
        raise InvalidRequest("only function tools are supported", param=f"tools[{i}]")
    out: Json = {
        "name": function.get("name"),
        # Anthropic requires a schema; a function without parameters takes none.
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> Json | None:
    if choice is None:
        out: Json | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}  # takes no parallel flag
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise InvalidRequest("unsupported tool_choice", param="tool_choice")
    if out is not None and parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _format_instruction(response_format: Any) -> str | None:
    # Best effort: the Messages API has no JSON mode, so the format becomes a
    # system instruction. The model will usually comply; nothing enforces it,
    # which is what output guardrails (schema check) are for.
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "Respond with a single valid JSON object and nothing else."
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = orjson.dumps(spec.get("schema", {})).decode()
        return (
            "Respond with a single valid JSON object and nothing else. "
            f"It must conform to this JSON Schema: {schema}"
        )
    return None


# --- response ---------------------------------------------------------------


def to_openai_usage(usage: Any) -> Json:
    """Anthropic usage → OpenAI usage with OTel semantics.

    Anthropic's ``input_tokens`` excludes cache reads and writes; OpenAI's
    (and OTel's) prompt tokens include them, with cached tokens a subset, so
    a cached token is counted once and priced as a discount on it.
    ``cache_creation_tokens`` is kept apart because cache writes cost more.
    """
    usage = usage if isinstance(usage, dict) else {}
    read = usage.get("cache_read_input_tokens") or 0
    created = usage.get("cache_creation_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + read + created
    completion = usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": created},
    }


def _tool_call(block: Json, index: int) -> Json:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {
        "index": index,
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": arguments},
    }


def to_openai_response(message: Json, *, created: int | None = None) -> Json:
    """Translate a Messages API response to a ``chat.completion`` body."""
    texts: list[str] = []
    calls: list[Json] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            call = _tool_call(block, len(calls))
            del call["index"]  # only stream deltas carry an index
            calls.append(call)
        # thinking and server-tool blocks have no OpenAI equivalent
    reply: Json = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        reply["tool_calls"] = calls
    reply["refusal"] = None
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": _FINISH.get(message.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": to_openai_usage(message.get("usage")),
    }


# --- stream -----------------------------------------------------------------


class StreamTranslator:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` dicts out.

    Feed each event's parsed data (``error`` events are the caller's to
    raise). ``done`` turns true at ``message_stop``, after which the finish
    chunk and a ``choices: []`` usage chunk have been returned.
    """

    __slots__ = ("_created", "_finish", "_id", "_model", "_tools", "_usage", "done")

    def __init__(self, *, model: str, created: int | None = None) -> None:
        self._id = ""
        self._model = model
        self._created = int(time.time()) if created is None else created
        self._tools: dict[int, int] = {}  # Anthropic block index → OpenAI tool index
        self._usage: Json = {}
        self._finish: str | None = None
        self.done = False

    def _chunk(self, delta: Json, finish: str | None = None) -> Json:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, data: Json) -> list[Json]:
        kind = data.get("type")
        if kind == "content_block_delta":  # by far the most frequent event
            return self._delta(data)
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = message.get("id") or ""
            self._model = message.get("model") or self._model
            self._usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            stop = (data.get("delta") or {}).get("stop_reason")
            if stop:
                self._finish = _FINISH.get(stop, "stop")
            # message_delta usage is cumulative: it replaces, never adds.
            self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v})
            return []
        if kind == "message_stop":
            self.done = True
            usage_chunk = self._chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = to_openai_usage(self._usage)
            return [self._chunk({}, self._finish or "stop"), usage_chunk]
        return []  # ping, content_block_stop, and event types added later

    def _block_start(self, data: Json) -> list[Json]:
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            index = len(self._tools)
            self._tools[data.get("index", -1)] = index
            call = _tool_call(block, index)
            call["function"]["arguments"] = ""  # arguments arrive as input_json_delta
            return [self._chunk({"tool_calls": [call]})]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _delta(self, data: Json) -> list[Json]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = self._tools.get(data.get("index", -1))
            if index is None:
                return []
            fragment = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [fragment]})]
        return []  # thinking, signature and citation deltas have no OpenAI form

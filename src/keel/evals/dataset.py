"""Golden datasets: JSONL or YAML files of examples, versioned by content hash.

A dataset file holds examples (``keel.evals.base.Example``): JSONL with one
JSON object per line, or YAML with a list (or ``{examples: [...]}``). Each
example has an ``id`` (required, unique) and any of ``variables``,
``messages``, ``expected``, ``reference``, ``context`` and ``tags``; any other
key is an error. Errors name the file, the line (JSONL) or index, and the
field. ``content_hash`` depends on the examples alone: not on the format,
the key order, whitespace, comments, or the order of the examples.
See docs/evals-scorers.md.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import yaml

from keel.errors import InvalidRequest
from keel.evals.base import Example
from keel.prompts._yaml import describe_yaml_error, load_yaml

FIELDS = ("id", "variables", "messages", "expected", "reference", "context", "tags")
_JSONL = (".jsonl",)
_YAML = (".yaml", ".yml", ".json")
# Problems shown in one error message; ``DatasetError.problems`` keeps them all.
_SHOWN = 20


@dataclass(frozen=True, slots=True)
class DatasetProblem:
    """One thing wrong in a dataset: ``file: where: field: message``."""

    file: str
    where: str  # "line 3" (JSONL), "examples[2] (line 14)" (YAML); "" for the whole file
    field: str  # "tags[1]", "messages[0].role"; "" for the example as a whole
    message: str

    def __str__(self) -> str:
        return ": ".join(part for part in (self.file, self.where, self.field, self.message) if part)


class DatasetError(InvalidRequest):
    """A dataset file cannot be read or has bad examples (CLI exit 2)."""

    def __init__(self, problems: Sequence[DatasetProblem]) -> None:
        lines = [str(p) for p in problems[:_SHOWN]]
        if len(problems) > _SHOWN:
            lines.append(f"... and {len(problems) - _SHOWN} more problems")
        first = problems[0] if problems else None
        super().__init__(
            "\n".join(lines) or "invalid dataset", param=(first.field or None) if first else None
        )
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str  # the file name without its suffix
    path: Path
    examples: tuple[Example, ...]
    content_hash: str  # "sha256:<hex>" of the examples' canonical JSON

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)


def load_dataset(path: str | Path) -> Dataset:
    """Read and validate a dataset file; ``DatasetError`` lists every problem found."""
    path = Path(path)
    file = str(path)
    entries, problems = _read_entries(path)
    examples: list[Example] = []
    first_seen: dict[str, str] = {}
    for where, raw in entries:
        example, bad = _example(raw)
        problems.extend(DatasetProblem(file, where, f, m) for f, m in bad)
        if example is None:
            continue
        if example.id in first_seen:
            message = f"duplicate id {example.id!r} (first at {first_seen[example.id]})"
            problems.append(DatasetProblem(file, where, "id", message))
            continue
        first_seen[example.id] = where
        examples.append(example)
    if not problems and not examples:
        problems.append(DatasetProblem(file, "", "", "no examples"))
    if problems:
        raise DatasetError(problems)
    return Dataset(path.stem, path, tuple(examples), content_hash(examples))


def content_hash(examples: Sequence[Example]) -> str:
    """``sha256:<hex>`` of the examples as canonical JSON (sorted keys, sorted by id)."""
    rows = sorted((_full_dict(e) for e in examples), key=lambda row: str(row["id"]))
    text = json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + sha256(text.encode("utf-8")).hexdigest()


def example_to_dict(example: Example) -> dict[str, Any]:
    """The example as a file would hold it: ``id`` first, empty fields left out."""
    data: dict[str, Any] = {"id": example.id}
    full = _full_dict(example)
    for name in FIELDS[1:]:
        if full[name] not in (None, {}, []):
            data[name] = full[name]
    return data


def _full_dict(example: Example) -> dict[str, Any]:
    messages = example.messages
    return {
        "id": example.id,
        "variables": _plain(example.variables),
        "messages": None if messages is None else _plain(messages),
        "expected": _plain(example.expected),
        "reference": example.reference,
        "context": _plain(example.context),
        "tags": _plain(example.tags),
    }


def _plain(value: Any) -> Any:
    """Tuples and mappings as the lists and dicts JSON has; a string stays a string."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# --- reading ------------------------------------------------------------------------


def _read_entries(path: Path) -> tuple[list[tuple[str, Any]], list[DatasetProblem]]:
    """The raw examples, each with where it is, and any problem reading the file."""
    file = str(path)
    suffix = path.suffix.lower()
    if suffix not in _JSONL + _YAML:
        message = f"unknown dataset format {suffix or '(no suffix)'!r}; use .jsonl, .yaml or .yml"
        return [], [DatasetProblem(file, "", "", message)]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        return [], [DatasetProblem(file, "", "", f"cannot read: {reason}")]
    return _jsonl_entries(file, text) if suffix in _JSONL else _yaml_entries(file, text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _jsonl_entries(file: str, text: str) -> tuple[list[tuple[str, Any]], list[DatasetProblem]]:
    entries: list[tuple[str, Any]] = []
    problems: list[DatasetProblem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            entries.append((where, json.loads(line, parse_constant=_reject_constant)))
        except json.JSONDecodeError as exc:
            message = f"not valid JSON: {exc.msg} (column {exc.colno})"
            problems.append(DatasetProblem(file, where, "", message))
        except ValueError as exc:
            problems.append(DatasetProblem(file, where, "", f"not valid JSON: {exc}"))
    return entries, problems


def _yaml_entries(file: str, text: str) -> tuple[list[tuple[str, Any]], list[DatasetProblem]]:
    try:
        data = load_yaml(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # the same tree, with line numbers
    except yaml.YAMLError as exc:
        return [], [DatasetProblem(file, "", "", f"not valid YAML: {describe_yaml_error(exc)}")]
    if isinstance(data, dict):
        unknown = sorted(str(key) for key in data if key != "examples")
        if unknown:
            message = f"unknown top-level key(s) {', '.join(unknown)}; expected only 'examples'"
            return [], [DatasetProblem(file, "", "", message)]
        data = data.get("examples")
        root = _value_node(root, "examples")
    if not isinstance(data, list):
        message = "expected a list of examples, or a mapping with an 'examples' list"
        return [], [DatasetProblem(file, "", "", message)]
    items = root.value if isinstance(root, yaml.SequenceNode) else []
    entries = []
    for index, raw in enumerate(data):
        line = f" (line {items[index].start_mark.line + 1})" if index < len(items) else ""
        entries.append((f"examples[{index}]{line}", raw))
    return entries, []


def _value_node(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if getattr(key_node, "value", None) == key:
                found: yaml.Node = value_node
                return found
    return None


# --- validating one example ---------------------------------------------------------


def _example(raw: Any) -> tuple[Example | None, list[tuple[str, str]]]:
    """The example ``raw`` describes, or the (field, message) problems with it."""
    if not isinstance(raw, dict):
        return None, [("", f"an example must be an object, not {_kind(raw)}")]
    problems: list[tuple[str, str]] = []
    for key in raw:
        if key not in FIELDS:
            problems.append((str(key), f"unknown field; expected one of {', '.join(FIELDS)}"))
    example_id = raw.get("id")
    if "id" not in raw:
        problems.append(("id", "required"))
    elif not isinstance(example_id, str) or not example_id.strip():
        problems.append(("id", f"must be a non-empty string, not {_kind(example_id)}"))
    variables = raw.get("variables", {})
    if not isinstance(variables, dict):
        problems.append(("variables", f"must be an object, not {_kind(variables)}"))
    messages = raw.get("messages")
    problems += _messages_problems(messages)
    reference = raw.get("reference")
    if reference is not None and not isinstance(reference, str):
        problems.append(("reference", f"must be a string, not {_kind(reference)}"))
    for name in ("context", "tags"):
        problems += _strings_problems(name, raw.get(name, []))
    for name in ("variables", "messages", "expected"):
        problems += _json_problems(raw.get(name), name)
    if problems:
        return None, problems
    return (
        Example(
            id=str(example_id),
            variables=variables,
            messages=None if messages is None else tuple(messages),
            expected=raw.get("expected"),
            reference=reference,
            context=tuple(raw.get("context", ())),
            tags=tuple(raw.get("tags", ())),
        ),
        [],
    )


def _messages_problems(messages: Any) -> list[tuple[str, str]]:
    if messages is None:
        return []
    if not isinstance(messages, list) or not messages:
        return [("messages", f"must be a non-empty list of messages, not {_kind(messages)}")]
    problems = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            problems.append((f"messages[{i}]", f"must be an object, not {_kind(message)}"))
        elif not isinstance(message.get("role"), str):
            problems.append((f"messages[{i}].role", "required, a string"))
    return problems


def _strings_problems(name: str, value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        return [(name, f"must be a list of strings, not {_kind(value)}")]
    return [
        (f"{name}[{i}]", f"must be a string, not {_kind(item)}")
        for i, item in enumerate(value)
        if not isinstance(item, str)
    ]


def _json_problems(value: Any, path: str) -> list[tuple[str, str]]:
    """Values YAML allows but JSON does not (dates, non-string keys, NaN) are errors."""
    if value is None or isinstance(value, str | bool | int):
        return []
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(path, f"{value} is not a JSON number")]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _json_problems(item, f"{path}[{i}]")]
    if isinstance(value, dict):
        problems = []
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append((path, f"key {key!r} is not a string"))
            else:
                problems += _json_problems(item, f"{path}.{key}")
        return problems
    return [(path, f"{_kind(value)} is not a JSON value (quote it to make it a string)")]


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


# --- from a trace, and appending ----------------------------------------------------


def example_from_trace(
    stored: Mapping[str, Any],
    *,
    id: str | None = None,
    expected: Any = None,
    reference: str | None = None,
    tags: Sequence[str] = (),
) -> Example:
    """A golden example from a stored request (``StoredRequest.as_dict()``).

    A request that named a prompt gives its ``variables``; one that sent
    ``messages`` gives those. The id defaults to the request id. Raises
    ``InvalidRequest`` when the request's body was not captured
    (``telemetry.capture_content``) or holds neither.
    """
    request_id = stored.get("request_id")
    content = stored.get("content")
    body = content.get("request_body") if isinstance(content, Mapping) else None
    if not isinstance(body, Mapping):
        raise InvalidRequest(
            f"request {request_id!r} has no stored request body: content capture"
            " (telemetry.capture_content) was off for it",
            param="request_id",
        )
    raw: dict[str, Any] = {"id": id if id is not None else request_id}
    prompt = body.get("prompt")
    if isinstance(prompt, Mapping):
        raw["variables"] = prompt.get("variables", {})
    elif body.get("messages") is not None:
        raw["messages"] = body["messages"]
    else:
        raise InvalidRequest(
            f"request {request_id!r} has neither a prompt nor messages to replay",
            param="request_id",
        )
    raw.update(expected=expected, reference=reference, tags=list(tags))
    example, problems = _example(raw)
    if example is None:
        where = f"request {request_id}"
        raise DatasetError([DatasetProblem("", where, f, m) for f, m in problems])
    return example


def append_example(path: str | Path, example: Example) -> Dataset:
    """Add ``example`` to a dataset file (created if absent) and return the new dataset.

    JSONL gets one line appended; a YAML file is rewritten (its comments are
    lost, its examples kept in order). An id already in the file is an error.
    """
    path = Path(path)
    row = example_to_dict(example)
    checked, problems = _example(row)
    if checked is None:
        raise DatasetError(
            [DatasetProblem(str(path), f"new example {example.id!r}", f, m) for f, m in problems]
        )
    if path.exists():
        dataset = load_dataset(path)
        if any(e.id == example.id for e in dataset.examples):
            message = f"an example with id {example.id!r} is already in the dataset"
            raise DatasetError([DatasetProblem(str(path), "", "id", message)])
    elif path.suffix.lower() not in _JSONL + _YAML:
        load_dataset(path)  # raises: unknown format
    if path.suffix.lower() in _JSONL:
        _append_line(path, json.dumps(row, ensure_ascii=False))
    else:
        _rewrite_yaml(path, row)
    return load_dataset(path)


def _append_line(path: Path, line: str) -> None:
    prefix = ""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            prefix = "" if f.read(1) == b"\n" else "\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(f"{prefix}{line}\n")


def _rewrite_yaml(path: Path, row: dict[str, Any]) -> None:
    data: Any = load_yaml(path.read_text(encoding="utf-8")) if path.exists() else None
    if isinstance(data, dict):
        data["examples"].append(row)
    elif isinstance(data, list):
        data.append(row)
    else:
        data = {"examples": [row]}
    text = yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 30
    )
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)

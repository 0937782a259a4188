"""What a VariableSpec accepts, in words a caller can act on.

Types follow JSON: ``string``, ``integer`` (not a boolean, not 2.0),
``number`` (an integer or a float, not a boolean), ``boolean``, ``list``,
``object``. Lengths count characters of a string or items of a list.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, Literal

from keel.prompts.model import VariableSpec, VariableType

_A_TYPE: dict[VariableType, str] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "list": "a list",
    "object": "an object",
}
_SIZED: set[VariableType] = {"string", "list"}
_NUMERIC: set[VariableType] = {"integer", "number"}


def is_required(spec: VariableSpec) -> bool:
    """Required unless it may be left out: ``required: false`` or a default to fall back on.

    The same rule as ``variables_shape``.
    """
    return spec.required and spec.default is None


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _has_type(kind: VariableType, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list | tuple)
    return isinstance(value, Mapping)


def show(value: Any, limit: int = 60) -> str:
    """A short JSON-ish rendering of a value for an error message."""
    if isinstance(value, str):
        text = value if len(value) <= limit else value[: limit - 3] + "..."
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return str(int(value))
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: ``true`` is not ``1``."""
    return isinstance(a, bool) == isinstance(b, bool) and bool(a == b)


def check_value(spec: VariableSpec, value: Any) -> str | None:
    """What is wrong with ``value`` for ``spec`` (``expected ..., got ...``), or ``None``."""
    if not _has_type(spec.type, value):
        return f"expected {_A_TYPE[spec.type]}, got {json_type(value)}"
    if spec.enum is not None and not any(_same(value, option) for option in spec.enum):
        options = ", ".join(show(option) for option in spec.enum)
        return f"expected one of {options}, got {show(value)}"
    if spec.type in _SIZED:
        return _check_length(spec, len(value))
    if spec.type in _NUMERIC:
        return _check_range(spec, value)
    return None


def _check_length(spec: VariableSpec, size: int) -> str | None:
    unit = "character" if spec.type == "string" else "item"
    if spec.max_length is not None and size > spec.max_length:
        return (
            f"expected {_A_TYPE[spec.type]} of at most {_count(spec.max_length, unit)}, got {size}"
        )
    if spec.min_length is not None and size < spec.min_length:
        return (
            f"expected {_A_TYPE[spec.type]} of at least {_count(spec.min_length, unit)}, got {size}"
        )
    return None


def _check_range(spec: VariableSpec, value: float) -> str | None:
    if spec.minimum is not None and value < spec.minimum:
        return f"expected {_A_TYPE[spec.type]} of at least {show(spec.minimum)}, got {show(value)}"
    if spec.maximum is not None and value > spec.maximum:
        return f"expected {_A_TYPE[spec.type]} of at most {show(spec.maximum)}, got {show(value)}"
    return None


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def normalize(value: Any) -> Any:
    """Lists arrive as lists and objects as dicts, whatever sequence or mapping was sent."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping) and not isinstance(value, dict):
        return dict(value)
    return value


def default_of(spec: VariableSpec) -> Any:
    """A fresh copy of the default, so no caller can change it for the next one."""
    default = spec.default
    return copy.deepcopy(default) if isinstance(default, list | dict) else default


Severity = Literal["error", "warning"]


def spec_problems(spec: VariableSpec) -> list[tuple[str, Severity, str]]:
    """(sub-field, severity, message) for a spec that contradicts itself."""
    found = _bound_problems(spec)
    if spec.enum is not None:
        if not spec.enum:
            found.append(("enum", "error", "lists no values"))
        for i, option in enumerate(spec.enum):
            if not _has_type(spec.type, option):
                wrong = f"expected {_A_TYPE[spec.type]}, got {json_type(option)}"
                found.append((f"enum[{i}]", "error", wrong))
    if spec.default is not None:
        problem = check_value(spec, spec.default)
        if problem is not None:
            found.append(("default", "error", problem))
        if spec.required and "required" in spec.model_fields_set:
            message = "a variable with a default is optional; drop `required: true` or the default"
            found.append(("required", "warning", message))
    return found


def _bound_problems(spec: VariableSpec) -> list[tuple[str, Severity, str]]:
    found: list[tuple[str, Severity, str]] = []
    kind = spec.type
    for key in ("min_length", "max_length"):
        if getattr(spec, key) is not None and kind not in _SIZED:
            found.append((key, "error", f"applies to strings and lists only, not {kind}"))
    for key in ("minimum", "maximum"):
        if getattr(spec, key) is not None and kind not in _NUMERIC:
            found.append((key, "error", f"applies to integers and numbers only, not {kind}"))
    low, high = spec.min_length, spec.max_length
    if low is not None and high is not None and low > high:
        found.append(("max_length", "error", f"is less than min_length {low}"))
    if spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
        found.append(("maximum", "error", f"is less than minimum {show(spec.minimum)}"))
    return found

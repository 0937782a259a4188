"""YAML in and out: a loader that refuses duplicate keys, a canonical dumper."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError


class _StrictLoader(yaml.SafeLoader):
    """``safe_load``, except that a key given twice is an error, not a silent overwrite."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)  # merges `<<: *anchor` keys first; those may repeat
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_duplicates,
)


def load_yaml(text: str) -> Any:
    """Parse ``text``; raises ``yaml.YAMLError`` (duplicate keys included)."""
    return yaml.load(text, Loader=_StrictLoader)


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """``line 3, column 7: found duplicate key 'name'`` — without PyYAML's stream name."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return str(exc)


class _CanonicalDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so a diff shows template lines, not escapes."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_CanonicalDumper.add_representer(str, _represent_str)


def canonical_yaml(value: Any) -> str:
    """One text per value: keys sorted, block style, no line folding."""
    return yaml.dump(
        value,
        Dumper=_CanonicalDumper,
        sort_keys=True,
        allow_unicode=True,
        default_flow_style=False,
        width=1 << 30,
    )

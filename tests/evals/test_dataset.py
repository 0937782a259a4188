"""Dataset files: loading, errors that name file/line/field, the content hash, traces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keel.errors import InvalidRequest
from keel.evals import (
    Dataset,
    DatasetError,
    Example,
    append_example,
    example_from_trace,
    example_to_dict,
    load_dataset,
)

ROWS: list[dict[str, Any]] = [
    {
        "id": "refund-1",
        "variables": {"question": "Can I get a refund?", "tier": "pro"},
        "expected": "yes",
        "reference": "Yes, within 30 days.",
        "context": ["Refunds are granted within 30 days."],
        "tags": ["refunds", "pro"],
    },
    {
        "id": "chat-2",
        "messages": [{"role": "user", "content": "2+2?"}],
        "expected": 4,
        "tags": ["math"],
    },
]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert isinstance(caught.value, InvalidRequest)  # CLI exit 2
    return [str(p) for p in caught.value.problems]


def test_load_jsonl(tmp_path: Path) -> None:
    dataset = load_dataset(write_jsonl(tmp_path / "golden.jsonl", ROWS))
    assert isinstance(dataset, Dataset)
    assert dataset.name == "golden"
    assert len(dataset) == 2
    first, second = dataset.examples
    assert first == Example(
        id="refund-1",
        variables={"question": "Can I get a refund?", "tier": "pro"},
        expected="yes",
        reference="Yes, within 30 days.",
        context=("Refunds are granted within 30 days.",),
        tags=("refunds", "pro"),
    )
    assert second.messages == ({"role": "user", "content": "2+2?"},)
    assert second.variables == {}
    assert [e.id for e in dataset] == ["refund-1", "chat-2"]  # file order kept
    assert dataset.content_hash.startswith("sha256:")
    assert len(dataset.content_hash) == len("sha256:") + 64


def test_load_yaml_list_and_mapping_forms(tmp_path: Path) -> None:
    listed = tmp_path / "a.yaml"
    listed.write_text(
        """
# a comment
- id: refund-1
  tags: [refunds, pro]
  variables: {tier: pro, question: "Can I get a refund?"}
  context:
    - Refunds are granted within 30 days.
  reference: Yes, within 30 days.
  expected: "yes"
- id: chat-2
  messages:
    - {role: user, content: "2+2?"}
  expected: 4
  tags: [math]
"""
    )
    mapped = tmp_path / "b.yml"
    mapped.write_text("examples:\n" + "".join(f"  - {json.dumps(row)}\n" for row in ROWS))
    from_jsonl = load_dataset(write_jsonl(tmp_path / "c.jsonl", ROWS))
    assert load_dataset(listed).examples == from_jsonl.examples
    assert load_dataset(mapped).examples == from_jsonl.examples


def test_content_hash_ignores_format_key_order_whitespace_and_example_order(
    tmp_path: Path,
) -> None:
    base = load_dataset(write_jsonl(tmp_path / "base.jsonl", ROWS)).content_hash
    reordered = tmp_path / "reordered.jsonl"
    reordered.write_text(
        "\n\n".join(
            json.dumps(dict(reversed(list(row.items()))), indent=None) for row in ROWS[::-1]
        )
    )
    spaced = tmp_path / "spaced.jsonl"
    spaced.write_text("".join(json.dumps(row, separators=(" , ", " : ")) + "  \n" for row in ROWS))
    as_yaml = tmp_path / "golden.yaml"
    as_yaml.write_text(json.dumps({"examples": ROWS}, indent=4))  # JSON is YAML
    # Defaults written out or left out are the same example.
    explicit = [{**ROWS[1], "variables": {}, "context": [], "reference": None}, ROWS[0]]
    defaults = write_jsonl(tmp_path / "explicit.jsonl", explicit)
    for path in (reordered, spaced, as_yaml, defaults):
        assert load_dataset(path).content_hash == base, path
    changed = write_jsonl(tmp_path / "changed.jsonl", [ROWS[0], {**ROWS[1], "expected": 5}])
    assert load_dataset(changed).content_hash != base


def test_jsonl_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "variables": {"q": "x"}}),
                "",
                json.dumps({"id": "b", "tags": "urgent", "expectd": "x"}),
                "{not json",
                json.dumps({"variables": {}}),
                json.dumps({"id": "a"}),
                json.dumps({"id": "c", "messages": [{"content": "hi"}], "context": ["ok", 3]}),
                json.dumps(["id", "d"]),
                json.dumps({"id": 7, "reference": {"text": "x"}}),
                '{"id": "e", "expected": NaN}',
            ]
        )
    )
    file = str(path)
    assert errors_of(path) == [
        f"{file}: line 4: not valid JSON: Expecting property name enclosed in double quotes"
        " (column 2)",
        f"{file}: line 10: not valid JSON: NaN is not a JSON value",
        f"{file}: line 3: expectd: unknown field; expected one of id, variables, messages,"
        " expected, reference, context, tags",
        f"{file}: line 3: tags: must be a list of strings, not a string",
        f"{file}: line 5: id: required",
        f"{file}: line 6: id: duplicate id 'a' (first at line 1)",
        f"{file}: line 7: messages[0].role: required, a string",
        f"{file}: line 7: context[1]: must be a string, not a number",
        f"{file}: line 8: an example must be an object, not a list",
        f"{file}: line 9: id: must be a non-empty string, not a number",
        f"{file}: line 9: reference: must be a string, not an object",
    ]


def test_yaml_errors_name_the_index_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        """examples:
  - id: a
    variables: {q: x}
  - id: b
    variables: [q]
  - id: c
    variables:
      when: 2024-05-01
"""
    )
    assert errors_of(path) == [
        f"{path}: examples[1] (line 4): variables: must be an object, not a list",
        f"{path}: examples[2] (line 6): variables.when: date is not a JSON value"
        " (quote it to make it a string)",
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.yaml", "id: a\n", "unknown top-level key(s) id; expected only 'examples'"),
        ("a.yaml", "just text\n", "expected a list of examples, or a mapping"),
        ("a.yaml", "- id: a\n  id: b\n", "not valid YAML: line 2, column 3: found duplicate key"),
        ("a.yaml", "[]\n", "no examples"),
        ("a.jsonl", "\n\n", "no examples"),
        ("a.csv", "id\n", "unknown dataset format '.csv'; use .jsonl, .yaml or .yml"),
    ],
)
def test_file_level_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    problems = errors_of(path)
    assert problems[0].startswith(f"{path}: {message}"), problems


def test_a_missing_file(tmp_path: Path) -> None:
    assert errors_of(tmp_path / "nope.jsonl") == [
        f"{tmp_path / 'nope.jsonl'}: cannot read: No such file or directory"
    ]


def test_the_error_message_shows_the_first_twenty(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "many.jsonl", [{"id": i} for i in range(25)])
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert len(caught.value.problems) == 25
    assert caught.value.message.splitlines()[-1] == "... and 5 more problems"
    assert caught.value.param == "id"


# --- from a trace -------------------------------------------------------------------


def stored(body: dict[str, Any] | None, answer: str = "It is 4.") -> dict[str, Any]:
    """What ``StoredRequest.as_dict()`` gives, trimmed to what matters here."""
    content = None if body is None else {"request_body": body, "response_text": answer}
    return {"request_id": "req-123", "operation": "chat", "content": content, "cost_usd": 0.1}


def test_example_from_a_prompt_request() -> None:
    body = {
        "model": "support",
        "prompt": {"name": "refunds", "label": "production", "variables": {"q": "Refund?"}},
    }
    example = example_from_trace(stored(body), expected="yes", tags=["incident-42"])
    assert example == Example(
        id="req-123", variables={"q": "Refund?"}, expected="yes", tags=("incident-42",)
    )


def test_example_from_a_messages_request() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
    ]
    body = {"model": "fast", "messages": messages, "temperature": 0}
    example = example_from_trace(stored(body), id="math-1", reference="4")
    assert example == Example(id="math-1", messages=tuple(messages), reference="4")
    assert example.variables == {}


def test_example_from_a_trace_without_content_or_input() -> None:
    with pytest.raises(InvalidRequest, match="content capture"):
        example_from_trace(stored(None))
    with pytest.raises(InvalidRequest, match="neither a prompt nor messages"):
        example_from_trace(stored({"model": "embed", "input": "x"}))
    with pytest.raises(DatasetError, match="request req-123: variables: must be an object"):
        example_from_trace(stored({"prompt": {"name": "p", "variables": [1]}}))


# --- appending ----------------------------------------------------------------------


NEW = Example(id="new-1", variables={"q": "é?"}, expected={"label": "pos"}, tags=("t",))


def test_append_to_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "golden.jsonl", ROWS)
    path.write_text(path.read_text().rstrip("\n"))  # no final newline: one is added first
    before = load_dataset(path).content_hash
    dataset = append_example(path, NEW)
    assert [e.id for e in dataset] == ["refund-1", "chat-2", "new-1"]
    assert dataset.examples[-1] == NEW
    assert dataset.content_hash != before
    assert path.read_text().splitlines()[-1] == (
        '{"id": "new-1", "variables": {"q": "é?"}, "expected": {"label": "pos"}, "tags": ["t"]}'
    )
    with pytest.raises(DatasetError, match="an example with id 'new-1' is already"):
        append_example(path, NEW)


@pytest.mark.parametrize("mapping", [True, False])
def test_append_to_yaml_keeps_its_shape(tmp_path: Path, mapping: bool) -> None:
    path = tmp_path / "golden.yaml"
    path.write_text(json.dumps({"examples": ROWS} if mapping else ROWS))
    dataset = append_example(path, NEW)
    assert [e.id for e in dataset] == ["refund-1", "chat-2", "new-1"]
    assert path.read_text().startswith("examples:" if mapping else "- id: refund-1")
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("name", ["new.jsonl", "new.yaml"])
def test_append_creates_the_file(tmp_path: Path, name: str) -> None:
    dataset = append_example(tmp_path / name, NEW)
    assert dataset.examples == (NEW,)
    assert dataset.content_hash == append_example(tmp_path / f"other-{name}", NEW).content_hash


def test_append_refuses_an_example_no_file_could_hold(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="tags: must be a list of strings"):
        append_example(tmp_path / "x.jsonl", Example(id="x", tags="oops"))
    assert not (tmp_path / "x.jsonl").exists()


def test_example_to_dict_leaves_out_empty_fields() -> None:
    assert example_to_dict(Example(id="a")) == {"id": "a"}
    assert list(example_to_dict(NEW)) == ["id", "variables", "expected", "tags"]


def test_keel_evals_exports_agree() -> None:
    import ast

    import keel.evals as evals

    tree = ast.parse(Path(evals.__file__).read_text())
    typed = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for stmt in node.body
        if isinstance(stmt, ast.ImportFrom)
        for alias in stmt.names
    }
    assert set(evals.__all__) == set(evals._EXPORTS) == typed
    for name in evals.__all__:
        assert getattr(evals, name) is not None

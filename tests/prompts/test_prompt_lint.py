"""Lint: template and schema checks, and semver discipline against the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prompt_support import EXAMPLES, FakeRegistry, make_prompt, prompt_dict, write_prompt

from keel.prompts import (
    Finding,
    PromptSource,
    breaking_changes,
    content_of,
    diff_contents,
    has_errors,
    lint,
    lint_dir,
)


def _found(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.field, f.severity, f.message) for f in findings]


def test_the_quickstart_prompts_are_clean() -> None:
    assert lint_dir(EXAMPLES, FakeRegistry(), aliases={"fast", "smart"}) == []


def test_a_clean_prompt_has_no_findings() -> None:
    assert lint([make_prompt()]) == []


def test_template_syntax_errors_are_errors() -> None:
    messages = [{"role": "user", "content": "{{ question }}\n{% if question %}"}]
    findings = lint([make_prompt(messages=messages, variables={"question": {}})])
    assert len(findings) == 1
    field, severity, message = _found(findings)[0]
    assert (field, severity) == ("messages[0].content", "error")
    assert message.startswith("template syntax error, line 2: Unexpected end of template")


def test_undeclared_variables_are_errors_and_unused_ones_warnings() -> None:
    messages = [
        {"role": "system", "content": "Use {{ tone }} {{ range(2) | list }}."},
        {"role": "user", "content": "{% set x = 1 %}{{ question }} {{ x }} {{ loop_var }}"},
    ]
    variables = {"question": {}, "tone": {"default": "calm"}, "unused": {"required": False}}
    assert _found(lint([make_prompt(messages=messages, variables=variables)])) == [
        ("messages[1].content", "error", "uses 'loop_var', which is not declared in variables"),
    ]
    messages[1]["content"] = "{{ question }}"
    assert _found(lint([make_prompt(messages=messages, variables=variables)])) == [
        ("variables.unused", "warning", "declared but no template uses it"),
    ]


@pytest.mark.parametrize(
    ("spec", "field", "severity", "message"),
    [
        ({"type": "integer", "max_length": 3}, "max_length", "error", "applies to strings"),
        ({"type": "string", "minimum": 0}, "minimum", "error", "applies to integers"),
        ({"min_length": 5, "max_length": 2}, "max_length", "error", "less than min_length 5"),
        ({"type": "number", "minimum": 2, "maximum": 1}, "maximum", "error", "less than minimum"),
        ({"enum": ["a", 1]}, "enum[1]", "error", "expected a string, got integer"),
        ({"enum": []}, "enum", "error", "lists no values"),
        ({"enum": ["a"], "default": "b"}, "default", "error", 'expected one of "a", got "b"'),
        ({"max_length": 2, "default": "long"}, "default", "error", "at most 2 characters"),
        ({"required": True, "default": "x"}, "required", "warning", "optional"),
    ],
)
def test_inconsistent_variable_specs(
    spec: dict[str, Any], field: str, severity: str, message: str
) -> None:
    prompt = make_prompt(messages=[{"role": "user", "content": "{{ v }}"}], variables={"v": spec})
    [finding] = lint([prompt])
    assert (finding.field, finding.severity) == (f"variables.v.{field}", severity)
    assert message in finding.message


def test_output_schema_must_be_a_valid_json_schema() -> None:
    schema = {"type": "object", "properties": {"queue": {"type": "strin"}}}
    [finding] = lint([make_prompt(output_schema=schema)])
    assert (finding.field, finding.severity) == ("output_schema.properties.queue.type", "error")
    assert finding.message.startswith("not a valid JSON Schema: 'strin' is not valid")
    assert lint([make_prompt(output_schema={"type": "object", "required": ["a"]})]) == []


def test_unknown_model_alias_is_an_error_when_aliases_are_known() -> None:
    [finding] = lint([make_prompt(model="fats")], aliases={"fast", "smart"})
    assert finding.message == "unknown model alias 'fats'; known: fast, smart"


def test_file_name_should_match_the_prompt_name(tmp_path: Path) -> None:
    write_prompt(tmp_path / "rag.yaml", prompt_dict())
    [finding] = lint_dir(tmp_path)
    assert str(finding) == (
        f"{tmp_path / 'rag.yaml'}: name: warning: the file should be named rag-answer.yaml"
    )
    assert not has_errors([finding])


def test_lint_dir_reports_unreadable_files_and_duplicates(tmp_path: Path) -> None:
    write_prompt(tmp_path / "broken.yaml", prompt_dict(name="broken", version="one"))
    write_prompt(tmp_path / "rag-answer.yaml", prompt_dict())
    write_prompt(tmp_path / "z" / "rag-answer.yaml", prompt_dict())
    findings = lint_dir(tmp_path)
    assert [(f.file, f.field, f.severity) for f in findings] == [
        (str(tmp_path / "broken.yaml"), "version", "error"),
        (str(tmp_path / "z" / "rag-answer.yaml"), "name", "error"),
    ]
    assert has_errors(findings)


def test_lint_of_sources_catches_duplicate_names(tmp_path: Path) -> None:
    one = PromptSource(tmp_path / "rag-answer.yaml", make_prompt())
    findings = lint([one, make_prompt()])
    assert _found(findings) == [
        ("name", "error", f"duplicate prompt name 'rag-answer', also in {one.file}")
    ]


# --- semver discipline ------------------------------------------------------


def _version_findings(pushed: list[Any], local: Any) -> list[tuple[str, str, str]]:
    return _found(lint([local], FakeRegistry(*pushed)))


def test_a_first_version_and_an_identical_repush_are_fine() -> None:
    prompt = make_prompt()
    assert _version_findings([], prompt) == []
    assert _version_findings([prompt], prompt) == []
    # description, owner and tags are not content: changing them is not a new version.
    assert _version_findings([prompt], make_prompt(description="Better words", tags=["x"])) == []


def test_reusing_a_pushed_version_for_different_content_shows_the_diff() -> None:
    pushed = make_prompt()
    local = make_prompt(params={"temperature": 0.7})
    [(field, severity, message)] = _version_findings([pushed], local)
    assert (field, severity) == ("version", "error")
    assert message.startswith("version 1.0.0 was already pushed with different content;")
    assert "--- rag-answer 1.0.0 (pushed)\n+++ this file\n" in message
    assert "-  temperature: 0.2\n+  temperature: 0.7" in message


def test_a_new_version_must_be_greater_than_the_latest() -> None:
    pushed = [make_prompt(version="1.0.0"), make_prompt(version="1.2.0", params={})]
    [(field, _, message)] = _version_findings(pushed, make_prompt(version="1.1.0", params={}))
    assert (field, message) == (
        "version",
        "1.1.0 is not greater than the latest pushed version 1.2.0",
    )
    [(_, _, message)] = _version_findings(pushed, make_prompt(version="1.2.0-rc.1", params={}))
    assert "not greater than the latest pushed version 1.2.0" in message


def test_text_or_param_changes_need_only_a_new_version() -> None:
    pushed = make_prompt()
    assert _version_findings([pushed], make_prompt(version="1.0.1", params={})) == []
    messages = [
        {"role": "system", "content": "Reply in {{ language }}!"},
        *prompt_dict()["messages"][1:],
    ]
    assert _version_findings([pushed], make_prompt(version="1.1.0", messages=messages)) == []


def _with_variables(version: str, **changes: Any) -> Any:
    data = prompt_dict(version=version)
    for name, spec in changes.items():
        if spec is None:
            del data["variables"][name]
        else:
            data["variables"][name] = spec
    data["messages"][1]["content"] += "".join(
        f" {{{{ {name} }}}}" for name, spec in changes.items() if spec is not None
    )
    if "language" in changes and changes["language"] is None:
        data["messages"][0]["content"] = "Answer."
    return make_prompt(**data)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"language": None}, "'language' was removed"),
        ({"question": {"type": "list"}}, "'question' changed type from string to list"),
        ({"language": {"enum": ["English", "French"]}}, "'language' became required"),
        ({"tone": {"type": "string"}}, "new required variable 'tone'"),
    ],
)
def test_a_breaking_variables_change_needs_a_major_bump(
    changes: dict[str, Any], reason: str
) -> None:
    pushed = make_prompt()
    [(field, severity, message)] = _version_findings([pushed], _with_variables("1.1.0", **changes))
    assert (field, severity) == ("version", "error")
    assert message == (
        f"the variables changed in a breaking way since 1.0.0 ({reason}):"
        " bump the major version to 2.0.0"
    )
    assert _version_findings([pushed], _with_variables("2.0.0", **changes)) == []


def test_adding_an_optional_variable_or_relaxing_one_is_not_breaking() -> None:
    pushed = make_prompt()
    local = _with_variables(
        "1.1.0", tone={"required": False}, question={"type": "string", "required": False}
    )
    assert _version_findings([pushed], local) == []
    assert breaking_changes(content_of(pushed), content_of(local)) == []


def test_tightened_constraints_warn_without_a_major_bump() -> None:
    pushed = make_prompt()
    local = _with_variables(
        "1.1.0",
        question={"type": "string", "min_length": 5, "max_length": 100},
        language={"enum": ["English"], "default": "English"},
    )
    assert _version_findings([pushed], local) == [
        ("variables.language", "warning", 'enum no longer accepts "French": callers may now fail'),
        (
            "variables.question",
            "warning",
            "max_length tightened from 2000 to 100: callers may now fail",
        ),
        ("variables.question", "warning", "min_length tightened from 1 to 5: callers may now fail"),
    ]


def test_a_new_version_with_the_same_content_is_a_warning() -> None:
    [(field, severity, message)] = _version_findings([make_prompt()], make_prompt(version="1.0.1"))
    assert (field, severity) == ("version", "warning")
    assert message == "same content as the pushed 1.0.0; this version changes nothing"


def test_diff_contents_is_a_unified_diff_of_canonical_yaml() -> None:
    a = content_of(make_prompt())
    b = content_of(make_prompt(version="1.1.0", params={"temperature": 0.2, "top_p": 0.9}))
    diff = diff_contents(a, b, "rag-answer 1.0.0", "rag-answer 1.1.0")
    assert diff.startswith("--- rag-answer 1.0.0\n+++ rag-answer 1.1.0\n")
    assert "+  top_p: 0.9\n" in diff
    assert "-version: 1.0.0\n+version: 1.1.0\n" in diff
    # Multi-line templates diff line by line, as block scalars.
    assert "- content: '{% for doc in documents %}" not in diff
    assert diff_contents(a, dict(reversed(list(a.items()))), "x", "y") == ""

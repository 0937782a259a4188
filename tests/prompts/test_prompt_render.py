"""Rendering: variables validated against the schema, then a sandboxed template."""

from __future__ import annotations

from typing import Any

import pytest
from prompt_support import EXAMPLES, make_prompt

from keel.errors import InvalidRequest
from keel.prompts import (
    PromptRenderFailed,
    PromptVariablesInvalid,
    Renderer,
    load_prompt_file,
    render,
    validate_variables,
)


def test_render_returns_openai_chat_messages() -> None:
    prompt = make_prompt()
    messages = render(prompt, {"question": "Why?", "documents": ["A.", "B."]})
    assert messages == [
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": "[1] A.\n[2] B.\nQuestion: Why?"},
    ]


def test_the_quickstart_rag_prompt_renders() -> None:
    prompt = load_prompt_file(EXAMPLES / "rag-answer.yaml")
    docs = [{"title": "Passwords", "text": "Reset them from Settings."}]
    messages = render(prompt, {"question": "How do I reset my password?", "documents": docs})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"].endswith("Answer in English, in at most 150 words.")
    assert messages[3]["content"] == (
        "Documents:\n[1] Passwords: Reset them from Settings.\n"
        "Question: How do I reset my password?"
    )


def test_defaults_fill_optional_variables_and_none_renders_empty() -> None:
    prompt = make_prompt(
        messages=[{"role": "user", "content": "{{ question }}|{{ note }}|{{ language }}"}],
        variables={
            "question": {},
            "note": {"required": False},
            "language": {"default": "English"},
        },
    )
    assert validate_variables(prompt, {"question": "q"}) == {
        "question": "q",
        "note": None,
        "language": "English",
    }
    assert render(prompt, {"question": "q", "note": None})[0]["content"] == "q||English"


def test_a_list_default_is_copied_for_each_request() -> None:
    prompt = make_prompt()
    first = validate_variables(prompt, {"question": "q"})
    first["documents"].append("changed")
    assert validate_variables(prompt, {"question": "q"})["documents"] == []


def _problems(prompt_kwargs: dict[str, Any], variables: dict[str, Any]) -> list[str]:
    with pytest.raises(PromptVariablesInvalid) as caught:
        validate_variables(make_prompt(**prompt_kwargs), variables)
    return [str(p) for p in caught.value.problems]


def test_a_too_long_string_names_the_variable_and_the_limit() -> None:
    with pytest.raises(PromptVariablesInvalid) as caught:
        render(make_prompt(), {"question": "x" * 2417})
    error = caught.value
    assert error.param == "prompt.variables.question"
    assert error.message == (
        "prompt.variables.question: expected a string of at most 2000 characters, got 2417"
    )
    assert isinstance(error, InvalidRequest)
    assert (error.status, error.code) == (422, "prompt_variables_invalid")
    assert error.body()["error"]["param"] == "prompt.variables.question"


SPECS: dict[str, Any] = {
    "s": {"type": "string", "min_length": 2, "required": False},
    "i": {"type": "integer", "minimum": 1, "maximum": 10, "required": False},
    "n": {"type": "number", "maximum": 1, "required": False},
    "b": {"type": "boolean", "required": False},
    "l": {"type": "list", "max_length": 1, "required": False},
    "o": {"type": "object", "required": False},
    "e": {"enum": ["en", "fr"], "required": False},
}
ONE_MESSAGE = [{"role": "user", "content": "{{ s }}{{ i }}{{ n }}{{ b }}{{ l }}{{ o }}{{ e }}"}]


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"s": 5}, "prompt.variables.s: expected a string, got integer"),
        ({"s": "a"}, "prompt.variables.s: expected a string of at least 2 characters, got 1"),
        ({"i": True}, "prompt.variables.i: expected an integer, got boolean"),
        ({"i": 2.0}, "prompt.variables.i: expected an integer, got number"),
        ({"i": "3"}, "prompt.variables.i: expected an integer, got string"),
        ({"i": 0}, "prompt.variables.i: expected an integer of at least 1, got 0"),
        ({"i": 11}, "prompt.variables.i: expected an integer of at most 10, got 11"),
        ({"n": 1.5}, "prompt.variables.n: expected a number of at most 1, got 1.5"),
        ({"b": "yes"}, "prompt.variables.b: expected a boolean, got string"),
        ({"l": [1, 2]}, "prompt.variables.l: expected a list of at most 1 item, got 2"),
        ({"o": [1]}, "prompt.variables.o: expected an object, got list"),
        ({"e": "de"}, 'prompt.variables.e: expected one of "en", "fr", got "de"'),
    ],
)
def test_each_kind_of_bad_value_is_explained(variables: dict[str, Any], problem: str) -> None:
    assert _problems({"variables": SPECS, "messages": ONE_MESSAGE}, variables) == [problem]


def test_good_values_of_every_type_pass() -> None:
    prompt = make_prompt(variables=SPECS, messages=ONE_MESSAGE)
    values = {"s": "ab", "i": 3, "n": 1, "b": False, "l": ("x",), "o": {"k": 1}, "e": "fr"}
    assert validate_variables(prompt, values)["l"] == ["x"]
    assert render(prompt, values)[0]["content"] == "ab31False['x']{'k': 1}fr"


def test_true_is_not_one_in_an_enum() -> None:
    prompt: dict[str, Any] = {
        "variables": {"level": {"type": "integer", "enum": [1, 2]}},
        "messages": [{"role": "user", "content": "{{ level }}"}],
    }
    assert _problems(prompt, {"level": True}) == [
        "prompt.variables.level: expected an integer, got boolean"
    ]


def test_missing_null_and_unknown_variables_are_all_reported() -> None:
    problems = _problems({}, {"documents": None, "questoin": "typo"})
    assert problems == [
        "prompt.variables.question: required variable: expected a string, it is missing",
        "prompt.variables.questoin: unknown variable;"
        " prompt rag-answer 1.0.0 takes: documents, language, question",
    ]
    assert _problems({}, {"question": None}) == [
        "prompt.variables.question: required variable: expected a string, got null"
    ]


def test_variables_must_be_a_mapping() -> None:
    with pytest.raises(PromptVariablesInvalid) as caught:
        validate_variables(make_prompt(), ["question"])  # type: ignore[arg-type]  # on purpose
    assert caught.value.param == "prompt.variables"
    assert "expected an object of variable names to values, got list" in caught.value.message


def test_a_missing_attribute_names_the_variable_it_was_read_from() -> None:
    prompt = make_prompt(
        messages=[
            {"role": "user", "content": "{% for d in docs %}{{ d.title }}{% endfor %}"},
        ],
        variables={"docs": {"type": "list"}},
    )
    with pytest.raises(PromptVariablesInvalid) as caught:
        render(prompt, {"docs": [{"title": "a"}, {"text": "no title"}]})
    assert caught.value.param == "prompt.variables.docs[1]"
    assert caught.value.message == (
        "prompt.variables.docs[1]: 'dict object' has no attribute 'title' (read by messages[0])"
    )


def test_an_undeclared_template_variable_fails_the_render_naming_it() -> None:
    prompt = make_prompt(messages=[{"role": "user", "content": "{{ question }} {{ tone }}"}])
    with pytest.raises(PromptRenderFailed) as caught:
        render(prompt, {"question": "q"})
    assert caught.value.param == "prompt.variables.tone"
    assert "messages[0] of prompt rag-answer 1.0.0 uses 'tone'" in caught.value.message
    assert (caught.value.status, caught.value.code) == (422, "prompt_render_failed")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ question.__class__.__mro__ }}", "the sandbox forbids"),
        ("{{ documents.append(1) }}", "the sandbox forbids"),
        ("{{ lipsum.__globals__ }}", "the sandbox forbids"),
        ("{% include 'secret.txt' %}", "the template failed"),
        ("{{ 1 / 0 }}", "the template failed: ZeroDivisionError"),
        ("{% for %}", "template syntax error at line 1"),
    ],
)
def test_the_sandbox_refuses_unsafe_or_broken_templates(template: str, expected: str) -> None:
    prompt = make_prompt(messages=[{"role": "user", "content": template}])
    with pytest.raises(PromptRenderFailed, match=expected) as caught:
        render(prompt, {"question": "q"})
    assert caught.value.param == "prompt.messages[0].content"


def test_autoescape_is_off() -> None:
    prompt = make_prompt(messages=[{"role": "user", "content": "{{ question }}"}])
    assert render(prompt, {"question": "<b>&'\""})[0]["content"] == "<b>&'\""


def test_each_template_is_compiled_once() -> None:
    renderer = Renderer()
    prompt = make_prompt()
    first = renderer.compile(prompt.messages[1].content)
    renderer.render(prompt, {"question": "q"})
    renderer.render(prompt, {"question": "r"})
    assert renderer.compile(prompt.messages[1].content) is first
    assert first.names == {"documents", "question"}


def test_the_compiled_template_cache_is_bounded() -> None:
    renderer = Renderer(max_templates=2)
    first = renderer.compile("a")
    renderer.compile("b")
    renderer.compile("c")
    assert renderer.compile("a") is not first

"""Reading prompt files: errors name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from prompt_support import EXAMPLES, prompt_dict, write_prompt

from keel.errors import CallerError
from keel.prompts import (
    PromptFileError,
    content_hash,
    load_prompt_dir,
    load_prompt_file,
    load_prompt_sources,
)


def test_a_valid_file_loads(tmp_path: Path) -> None:
    path = write_prompt(tmp_path / "rag-answer.yaml", prompt_dict())
    prompt = load_prompt_file(path)
    assert prompt.name == "rag-answer"
    assert prompt.variables["language"].default == "English"
    assert content_hash(prompt).startswith("sha256:")


def test_a_bad_field_names_the_file_and_the_field_path(tmp_path: Path) -> None:
    data = prompt_dict()
    data["messages"][1]["role"] = "robot"
    path = write_prompt(tmp_path / "prompts" / "rag.yaml", data)
    with pytest.raises(PromptFileError) as caught:
        load_prompt_file(path)
    error = caught.value
    assert str(error).startswith(f"{path}: messages[1].role: Input should be 'system'")
    assert error.param == "messages[1].role"
    assert error.problems[0].file == str(path)
    assert isinstance(error, CallerError)
    assert (error.status, error.code) == (400, "prompt_file_invalid")


def test_every_problem_in_a_file_is_reported(tmp_path: Path) -> None:
    data = prompt_dict(version="1.0", temprature=0.3)
    data["variables"]["question"]["type"] = "text"
    path = write_prompt(tmp_path / "rag-answer.yaml", data)
    with pytest.raises(PromptFileError) as caught:
        load_prompt_file(path)
    fields = {p.field: p.message for p in caught.value.problems}
    assert fields["temprature"] == "unknown key"
    assert "version" in fields
    assert "variables.question.type" in fields


def test_params_may_not_set_what_the_prompt_sets(tmp_path: Path) -> None:
    path = write_prompt(tmp_path / "p.yaml", prompt_dict(params={"model": "gpt-4o"}))
    with pytest.raises(PromptFileError, match=r"params: 'model' is not a param"):
        load_prompt_file(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", r"not valid YAML: line 2, column 1"),
        ("name: a\nname: b\n", r"not valid YAML: line 2, column 1: found duplicate key 'name'"),
        ("- just\n- a list\n", r"expected a mapping at the top level"),
        ("", r"expected a mapping at the top level"),
    ],
)
def test_yaml_problems_name_the_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write_prompt(tmp_path / "p.yaml", text)
    with pytest.raises(PromptFileError, match=expected) as caught:
        load_prompt_file(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_missing_file_is_a_prompt_file_error(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="cannot read prompt file"):
        load_prompt_file(tmp_path / "nope.yaml")


def test_a_directory_is_read_recursively_in_path_order(tmp_path: Path) -> None:
    write_prompt(tmp_path / "b.yaml", prompt_dict(name="b"))
    write_prompt(tmp_path / "sub" / "a.yml", prompt_dict(name="a"))
    write_prompt(tmp_path / ".hidden" / "c.yaml", prompt_dict(name="c"))
    write_prompt(tmp_path / "notes.txt", "not a prompt")
    assert [p.name for p in load_prompt_dir(tmp_path)] == ["b", "a"]
    sources = load_prompt_sources(tmp_path)
    assert [s.path.name for s in sources] == ["b.yaml", "a.yml"]


def test_one_error_lists_the_problems_of_every_file(tmp_path: Path) -> None:
    write_prompt(tmp_path / "a.yaml", prompt_dict(name="a", model=""))
    write_prompt(tmp_path / "b.yaml", "name: [")
    write_prompt(tmp_path / "c.yaml", prompt_dict(name="c"))
    with pytest.raises(PromptFileError) as caught:
        load_prompt_dir(tmp_path)
    assert [p.file for p in caught.value.problems] == [
        str(tmp_path / "a.yaml"),
        str(tmp_path / "b.yaml"),
    ]


def test_duplicate_names_in_a_directory_are_an_error(tmp_path: Path) -> None:
    write_prompt(tmp_path / "a.yaml", prompt_dict(name="same"))
    write_prompt(tmp_path / "b.yaml", prompt_dict(name="same"))
    with pytest.raises(PromptFileError) as caught:
        load_prompt_dir(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'b.yaml'}: name: duplicate prompt name 'same', also in {tmp_path / 'a.yaml'}"
    )


def test_a_directory_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="not a directory"):
        load_prompt_dir(tmp_path / "missing")


def test_the_quickstart_prompts_load() -> None:
    names = [p.name for p in load_prompt_dir(EXAMPLES)]
    assert names == ["classify-ticket", "rag-answer"]

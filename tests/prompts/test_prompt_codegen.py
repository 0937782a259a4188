"""Codegen: typed variable models that pass mypy --strict and check what the gateway checks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prompt_support import EXAMPLES, make_prompt
from pydantic import BaseModel, ValidationError

from keel.prompts import (
    PromptFileError,
    class_name,
    codegen,
    load_prompt_dir,
    validate_variables,
)

MYPY = Path(sys.executable).with_name("mypy")

ODD = make_prompt(
    name="2nd.odd_names",
    version="0.3.1-beta.2",
    description='Says "hi" \\ with a backslash.\nSecond line.',
    messages=[{"role": "user", "content": "x"}],
    variables={
        "class": {"type": "string", "required": False},
        "schema": {"type": "object", "default": {"a": [1, 2.5, None, True]}},
        "model_name": {"type": "string", "enum": ["a", "b"]},
        "list": {"type": "list", "required": False, "min_length": 1},
        "_private": {"type": "boolean", "default": False},
        "ratio": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        "count": {"type": "integer", "minimum": 1, "description": "How many."},
        "level": {"type": "integer", "enum": [1, 2, 3], "default": 1},
        "scale": {"type": "number", "enum": [0.5, 1.5], "default": 0.5},
    },
)


def _generate(tmp_path: Path, name: str = "prompt_models") -> tuple[Path, ModuleType]:
    prompts = [*load_prompt_dir(EXAMPLES), ODD]
    path = tmp_path / f"{name}.py"
    path.write_text(codegen(prompts), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the postponed annotations through it
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return path, module


def test_class_names() -> None:
    assert class_name("rag-answer") == "RagAnswerVariables"
    assert class_name("support.triage_v2") == "SupportTriageV2Variables"
    assert class_name("2nd") == "Prompt2ndVariables"


USAGE_OK = """
from prompt_models import PROMPTS, RagAnswerVariables, Prompt2ndOddNamesVariables

v = RagAnswerVariables(question="Why?", documents=[{"title": "t", "text": "x"}], language="French")
variables: dict[str, object] = v.variables()
name: str = RagAnswerVariables.NAME
odd = Prompt2ndOddNamesVariables(model_name_="a", count=2, class_="c")
cls = PROMPTS["rag-answer"]
"""

USAGE_BAD = """
from prompt_models import RagAnswerVariables

RagAnswerVariables(question=3, documents=[])
RagAnswerVariables(documents=[], language="Klingon")
RagAnswerVariables(question="q")
"""


def test_generated_module_passes_mypy_strict_and_catches_bad_call_sites(tmp_path: Path) -> None:
    path, _ = _generate(tmp_path)
    (tmp_path / "usage_ok.py").write_text(USAGE_OK, encoding="utf-8")
    (tmp_path / "usage_bad.py").write_text(USAGE_BAD, encoding="utf-8")
    base = [str(MYPY), "--strict", "--no-incremental", "--config-file", "/dev/null"]
    good = subprocess.run(
        [*base, path.name, "usage_ok.py"], cwd=tmp_path, capture_output=True, text=True
    )
    assert good.returncode == 0, good.stdout + good.stderr
    bad = subprocess.run([*base, "usage_bad.py"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert 'Argument "question" to "RagAnswerVariables" has incompatible type "int"' in bad.stdout
    assert 'Argument "language" to "RagAnswerVariables" has incompatible type' in bad.stdout
    assert 'Missing named argument "question"' in bad.stdout


def test_generated_models_validate_like_the_gateway(tmp_path: Path) -> None:
    _, module = _generate(tmp_path)
    rag: Any = module.RagAnswerVariables
    assert (rag.NAME, rag.VERSION) == ("rag-answer", "1.0.0")
    assert module.PROMPTS["rag-answer"] is rag
    assert issubclass(rag, BaseModel)
    good = rag(question="Why?", documents=[{"title": "t", "text": "x"}])
    prompt = {p.name: p for p in load_prompt_dir(EXAMPLES)}["rag-answer"]
    # What the model sends is what the gateway accepts, defaults included.
    assert validate_variables(prompt, good.variables()) == good.variables()
    assert good.variables()["max_words"] == 150
    bad_values: list[dict[str, Any]] = [
        {"question": "", "documents": [{}]},  # min_length 1
        {"question": "q" * 2001, "documents": [{}]},
        {"question": "q", "documents": []},
        {"question": "q", "documents": [{}], "language": "Klingon"},
        {"question": "q", "documents": [{}], "max_words": 10},
        {"question": "q", "documents": [{}], "max_words": "150"},  # strict: no coercion
        {"question": "q", "documents": [{}], "extra": 1},
    ]
    for values in bad_values:
        with pytest.raises(ValidationError):
            rag(**values)


def test_awkward_variable_names_keep_their_names_on_the_wire(tmp_path: Path) -> None:
    _, module = _generate(tmp_path)
    odd: Any = module.Prompt2ndOddNamesVariables
    assert odd.VERSION == "0.3.1-beta.2"
    assert odd.__doc__ == "2nd.odd_names 0.3.1-beta.2: Says 'hi' \\ with a backslash. Second line."
    value = odd(model_name_="b", count=3, class_="c", list_=[1])
    assert value.variables() == {
        "class": "c",
        "schema": {"a": [1, 2.5, None, True]},
        "model_name": "b",
        "list": [1],
        "_private": False,
        "ratio": 0.5,
        "count": 3,
        "level": 1,
        "scale": 0.5,
    }
    validate_variables(ODD, value.variables())
    assert odd.model_validate({"model_name": "a", "count": 1}).variables()["class"] is None
    for values in ({"model_name": "c", "count": 1}, {"model_name": "a", "count": 0}):
        with pytest.raises(ValidationError):
            odd.model_validate(values)
    with pytest.raises(ValidationError):
        odd.model_validate({"model_name": "a", "count": 1, "level": 4})


def test_codegen_is_deterministic_and_sorted_by_name() -> None:
    prompts = load_prompt_dir(EXAMPLES)
    text = codegen(prompts)
    assert text == codegen(list(reversed(prompts)))
    assert text.index("class ClassifyTicketVariables") < text.index("class RagAnswerVariables")


def test_prompts_that_would_share_a_class_name_are_refused() -> None:
    with pytest.raises(PromptFileError, match="generates RagAnswerVariables like 'rag-answer'"):
        codegen([make_prompt(), make_prompt(name="rag_answer")])
    with pytest.raises(PromptFileError, match="the same prompt twice"):
        codegen([make_prompt(), make_prompt(version="2.0.0")])

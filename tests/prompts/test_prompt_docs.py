"""docs/prompts.md names every field and error code, and its example is the real file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prompt_support import EXAMPLES
from pydantic import BaseModel

from keel.prompts import (
    MessageTemplate,
    PromptFile,
    PromptFileError,
    PromptRenderFailed,
    PromptVariablesInvalid,
    VariableSpec,
)

DOC = (Path(__file__).parents[2] / "docs" / "prompts.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("model", [PromptFile, MessageTemplate, VariableSpec])
def test_every_field_is_documented(model: type[BaseModel]) -> None:
    missing = [name for name in model.model_fields if f"| `{name}` |" not in DOC]
    assert not missing, f"docs/prompts.md does not document {missing}"


def test_every_error_code_is_documented() -> None:
    for error in (PromptFileError, PromptVariablesInvalid, PromptRenderFailed):
        assert f"`{error.code}`" in DOC


def test_the_example_in_the_docs_is_the_quickstart_file() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC, re.S)
    documented = yaml.safe_load(blocks[0])
    assert documented == yaml.safe_load((EXAMPLES / "rag-answer.yaml").read_text())

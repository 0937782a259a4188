"""The prompt package's errors: bad files, bad variables, templates that fail.

All three are caller errors (``keel.errors.InvalidRequest``): never retried,
CLI exit 2. Their ``message`` starts with where the problem is — a file and
field path, or ``prompt.variables.<name>`` — so it can be shown as is::

    InvalidRequest
    ├── PromptFileError         400 prompt_file_invalid: a prompt file is malformed
    ├── PromptVariablesInvalid  422 prompt_variables_invalid: variables break the schema
    └── PromptRenderFailed      422 prompt_render_failed: the template itself failed
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keel.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class FileProblem:
    """One thing wrong with one prompt file: ``file: field: message``."""

    file: str
    field: str  # a path like ``messages[1].role``; empty for the file as a whole
    message: str

    def __str__(self) -> str:
        if self.field:
            return f"{self.file}: {self.field}: {self.message}"
        return f"{self.file}: {self.message}"


class PromptFileError(InvalidRequest):
    """One or more prompt files could not be read or do not match the format."""

    code = "prompt_file_invalid"

    def __init__(self, problems: Sequence[FileProblem]) -> None:
        super().__init__(
            "\n".join(str(p) for p in problems) or "invalid prompt file",
            param=(problems[0].field or None) if problems else None,
        )
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class VariableProblem:
    param: str  # ``prompt.variables.<name>``
    message: str  # what was expected and what came

    def __str__(self) -> str:
        return f"{self.param}: {self.message}"


class PromptVariablesInvalid(InvalidRequest):
    """The variables a request passed do not match the prompt's schema.

    ``param`` names the first bad variable; ``problems`` lists every one.
    """

    status = 422
    code = "prompt_variables_invalid"

    def __init__(self, problems: Sequence[VariableProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems), param=problems[0].param)
        self.problems = list(problems)


class PromptRenderFailed(InvalidRequest):
    """A template failed while rendering valid variables: a bug in the prompt.

    ``keel prompts lint`` catches most of these (syntax errors, undeclared
    variables) before a version is pushed; what is left is a template doing
    something the sandbox forbids or that fails at run time.
    """

    status = 422
    code = "prompt_render_failed"

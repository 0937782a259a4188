"""Reading prompt files: one prompt per ``*.yaml`` / ``*.yml`` file, checked on load.

Every problem names the file and the path to the field, like a bad keel.yaml::

    prompts/rag-answer.yaml: messages[1].role: Input should be 'system', ...

A directory is read recursively (hidden folders skipped) and every file's
problems are reported together, so one lint run shows all of them. Two files
declaring the same prompt name are an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from keel.config import format_path
from keel.prompts._yaml import describe_yaml_error, load_yaml
from keel.prompts.errors import FileProblem, PromptFileError
from keel.prompts.model import PromptFile

PROMPT_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class PromptSource:
    """A prompt and the file it was read from (for messages that name the file)."""

    path: Path
    prompt: PromptFile

    @property
    def file(self) -> str:
        return str(self.path)


def load_prompt_file(path: str | Path) -> PromptFile:
    """Read and validate one prompt file; raise ``PromptFileError`` naming file and field."""
    prompt, problems = read_prompt_file(Path(path))
    if prompt is None:
        raise PromptFileError(problems)
    return prompt


def load_prompt_dir(directory: str | Path) -> list[PromptFile]:
    """Every prompt under ``directory``, sorted by file path; one error lists all problems."""
    return [source.prompt for source in load_prompt_sources(directory)]


def load_prompt_sources(directory: str | Path) -> list[PromptSource]:
    """Like :func:`load_prompt_dir`, keeping each prompt's file."""
    sources, problems = read_prompt_dir(Path(directory))
    if problems:
        raise PromptFileError(problems)
    return sources


def read_prompt_file(path: Path) -> tuple[PromptFile | None, list[FileProblem]]:
    """The prompt in ``path``, or ``None`` and what is wrong with the file."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [FileProblem(file, "", f"cannot read prompt file: {exc.strerror}")]
    except UnicodeDecodeError as exc:
        return None, [FileProblem(file, "", f"not UTF-8 text: {exc.reason}")]
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        return None, [FileProblem(file, "", f"not valid YAML: {describe_yaml_error(exc)}")]
    if not isinstance(raw, dict):
        return None, [FileProblem(file, "", "expected a mapping at the top level")]
    try:
        return PromptFile.model_validate(raw), []
    except ValidationError as exc:
        return None, [FileProblem(file, field, message) for field, message in _problems(exc)]


def read_prompt_dir(directory: Path) -> tuple[list[PromptSource], list[FileProblem]]:
    """Every readable prompt under ``directory``, and every problem found on the way."""
    if not directory.is_dir():
        return [], [FileProblem(str(directory), "", "not a directory")]
    sources: list[PromptSource] = []
    problems: list[FileProblem] = []
    for path in _prompt_paths(directory):
        prompt, found = read_prompt_file(path)
        problems += found
        if prompt is not None:
            sources.append(PromptSource(path, prompt))
    return sources, problems + duplicate_names(sources)


def duplicate_names(sources: list[PromptSource]) -> list[FileProblem]:
    first: dict[str, PromptSource] = {}
    problems = []
    for source in sources:
        name = source.prompt.name
        if name in first:
            problems.append(
                FileProblem(
                    source.file,
                    "name",
                    f"duplicate prompt name {name!r}, also in {first[name].file}",
                )
            )
        else:
            first[name] = source
    return problems


def _prompt_paths(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(directory).parts)
        if path.suffix in PROMPT_SUFFIXES and path.is_file() and not hidden:
            yield path


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(field path, message) per pydantic error, worded like ``keel.config`` words them."""
    found = []
    for error in exc.errors(include_url=False):
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        found.append((format_path(tuple(error["loc"])), message))
    return found

"""Prompts: prompt files, typed rendering, lint with semver discipline, codegen.

Owns the prompt file format (``prompts/<name>.yaml``, one prompt version per
file, see docs/prompts.md), reading it with errors that name the file and
field, validating a request's variables against the prompt's schema,
rendering its messages in a sandboxed Jinja2 environment, linting a folder
of prompts against what the registry already holds, and generating typed
pydantic models of each prompt's variables.

Pure domain code: no I/O beyond reading the files it is pointed at, no
database, no network. The registry reaches lint through the small
``RegistryView`` Protocol. May import ``keel.errors`` and ``keel.config``
(its error formatting); never ``keel.api`` or ``keel.cli``. Importing it
loads neither Jinja2 nor jsonschema: each loads with the first name that needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports

if TYPE_CHECKING:
    from keel.prompts._codegen import class_name, codegen
    from keel.prompts._lint import (
        Finding,
        RegistryView,
        StoredVersion,
        breaking_changes,
        check_versions,
        diff_contents,
        has_errors,
        lint,
        lint_dir,
    )
    from keel.prompts._render import Renderer, default_renderer, render, validate_variables
    from keel.prompts.errors import (
        FileProblem,
        PromptFileError,
        PromptRenderFailed,
        PromptVariablesInvalid,
        VariableProblem,
    )
    from keel.prompts.loader import (
        PromptSource,
        load_prompt_dir,
        load_prompt_file,
        load_prompt_sources,
    )
    from keel.prompts.model import (
        MessageTemplate,
        PromptFile,
        VariableSpec,
        content_hash,
        content_of,
        semver,
        variables_shape,
    )
    from keel.prompts.versions import latest_version, version_key

# Loaded on first use: the store and the gateway only need the file model at
# start, and rendering (Jinja2) or lint (jsonschema) can wait for their first use.
_EXPORTS = {
    "FileProblem": "keel.prompts.errors",
    "Finding": "keel.prompts._lint",
    "MessageTemplate": "keel.prompts.model",
    "PromptFile": "keel.prompts.model",
    "PromptFileError": "keel.prompts.errors",
    "PromptRenderFailed": "keel.prompts.errors",
    "PromptSource": "keel.prompts.loader",
    "PromptVariablesInvalid": "keel.prompts.errors",
    "RegistryView": "keel.prompts._lint",
    "Renderer": "keel.prompts._render",
    "StoredVersion": "keel.prompts._lint",
    "VariableProblem": "keel.prompts.errors",
    "VariableSpec": "keel.prompts.model",
    "breaking_changes": "keel.prompts._lint",
    "check_versions": "keel.prompts._lint",
    "class_name": "keel.prompts._codegen",
    "codegen": "keel.prompts._codegen",
    "content_hash": "keel.prompts.model",
    "content_of": "keel.prompts.model",
    "default_renderer": "keel.prompts._render",
    "diff_contents": "keel.prompts._lint",
    "has_errors": "keel.prompts._lint",
    "latest_version": "keel.prompts.versions",
    "lint": "keel.prompts._lint",
    "lint_dir": "keel.prompts._lint",
    "load_prompt_dir": "keel.prompts.loader",
    "load_prompt_file": "keel.prompts.loader",
    "load_prompt_sources": "keel.prompts.loader",
    "render": "keel.prompts._render",
    "semver": "keel.prompts.model",
    "validate_variables": "keel.prompts._render",
    "variables_shape": "keel.prompts.model",
    "version_key": "keel.prompts.versions",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "FileProblem",
    "Finding",
    "MessageTemplate",
    "PromptFile",
    "PromptFileError",
    "PromptRenderFailed",
    "PromptSource",
    "PromptVariablesInvalid",
    "RegistryView",
    "Renderer",
    "StoredVersion",
    "VariableProblem",
    "VariableSpec",
    "breaking_changes",
    "check_versions",
    "class_name",
    "codegen",
    "content_hash",
    "content_of",
    "default_renderer",
    "diff_contents",
    "has_errors",
    "latest_version",
    "lint",
    "lint_dir",
    "load_prompt_dir",
    "load_prompt_file",
    "load_prompt_sources",
    "render",
    "semver",
    "validate_variables",
    "variables_shape",
    "version_key",
]

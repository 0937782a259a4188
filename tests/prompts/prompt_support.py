"""Prompt builders and a registry fake shared by the prompt tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from keel.prompts import PromptFile, StoredVersion, content_hash, content_of

EXAMPLES = Path(__file__).parents[2] / "examples" / "quickstart" / "prompts"


def prompt_dict(**overrides: Any) -> dict[str, Any]:
    """A valid rag-answer prompt as YAML would give it, with fields replaced."""
    data: dict[str, Any] = {
        "name": "rag-answer",
        "version": "1.0.0",
        "description": "Answer from documents.",
        "model": "fast",
        "params": {"temperature": 0.2},
        "messages": [
            {"role": "system", "content": "Answer in {{ language }}."},
            {
                "role": "user",
                "content": (
                    "{% for doc in documents %}\n[{{ loop.index }}] {{ doc }}\n{% endfor %}\n"
                    "Question: {{ question }}"
                ),
            },
        ],
        "variables": {
            "question": {"type": "string", "min_length": 1, "max_length": 2000},
            "documents": {"type": "list", "default": []},
            "language": {"enum": ["English", "French"], "default": "English"},
        },
    }
    data.update(overrides)
    return data


def make_prompt(**overrides: Any) -> PromptFile:
    return PromptFile.model_validate(prompt_dict(**overrides))


def write_prompt(path: Path, data: dict[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def stored(prompt: PromptFile) -> StoredVersion:
    return StoredVersion(prompt.version, content_hash(prompt), content_of(prompt))


class FakeRegistry:
    """A ``RegistryView`` over versions given up front."""

    def __init__(self, *prompts: PromptFile) -> None:
        self._versions: dict[str, list[StoredVersion]] = {}
        for prompt in prompts:
            self._versions.setdefault(prompt.name, []).append(stored(prompt))

    def versions(self, name: str) -> list[StoredVersion]:
        return list(self._versions.get(name, []))

"""Entry point for multi-worker ``keel serve``: each worker builds its own app."""

from __future__ import annotations

from keel.api.app import KeelApp, create_app
from keel.config import load_config_from_env


def app() -> KeelApp:
    # `keel serve` validated the file and named it in the environment before forking.
    return create_app(load_config_from_env())

"""Entry point for multi-worker ``keel serve``: each worker builds its own app."""

from __future__ import annotations

import os

from keel.api.app import KeelApp, create_app
from keel.config import load_config


def app() -> KeelApp:
    # `keel serve` validated this file and exported its path before forking.
    return create_app(load_config(os.environ["KEEL_CONFIG"]))

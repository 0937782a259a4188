"""``type: python``: a scoring function found by dotted path (``mypkg.scorers:my_scorer``)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from keel.evals.base import Scorer
from keel.evals.scorers._base import ScorerConfigError, parse_options
from keel.evals.scorers._custom import CallableScorer, CustomOptions
from keel.evals.scorers._registry import register


class PythonOptions(CustomOptions):
    path: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@register("python")
def python_scorer(options: Mapping[str, Any]) -> Scorer:
    """``{type: python, path: "mypkg.scorers:my_scorer"}``: a function found by dotted path."""
    opts = parse_options(PythonOptions, options)
    module_name, _, attr_path = opts.path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ScorerConfigError([("path", f"cannot import module {module_name!r}: {exc}")]) from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ScorerConfigError(
                [("path", f"module {module_name!r} has no attribute {attr_path!r}")]
            ) from None
    if not callable(target):
        raise ScorerConfigError([("path", f"{opts.path} is not callable")])
    return CallableScorer(opts.name or attr_path.rsplit(".", 1)[-1], target, opts.threshold)

"""Suite files: every target form, defaults, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keel.errors import ConfigError
from keel.evals.suite import Baseline, Target, load_suite, parse_suite, parse_target

BASE = {"name": "s", "dataset": "d.jsonl", "scorers": [{"type": "exact"}]}


def parse(**fields: object) -> object:
    return parse_suite({**BASE, **fields})


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"prompt": "classify@1.2.0"}, Target("prompt", "classify", version="1.2.0")),
        ({"prompt": "classify@label:staging"}, Target("prompt", "classify", label="staging")),
        ({"prompt": {"name": "rag", "version": "2.0.0"}}, Target("prompt", "rag", "2.0.0")),
        ({"prompt": {"name": "rag", "label": "canary"}}, Target("prompt", "rag", label="canary")),
        ({"alias": "fast"}, Target("alias", "fast")),
    ],
)
def test_target_forms(target: dict[str, object], expected: Target) -> None:
    assert parse_suite({**BASE, "target": target}).target == expected


def test_defaults() -> None:
    suite = parse_suite({**BASE, "target": {"prompt": "p@1.0.0"}}, base=Path("/x"))
    assert suite.repeats == 1 and suite.reducer == "mean"
    assert suite.concurrency == 32 and suite.retries == 2
    assert suite.gate.max_regression_points == 2.0
    assert suite.gate.alpha == 0.05 and suite.gate.token_inflation_warn == 0.10
    assert suite.baseline == Baseline("label", label="production")
    assert suite.dataset_path == Path("/x/d.jsonl")
    # An alias target has no label to compare with.
    assert parse_suite({**BASE, "target": {"alias": "fast"}}).baseline == Baseline("none")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run:12", Baseline("run", run_id=12)),
        ("none", Baseline("none")),
        ("label:staging", Baseline("label", label="staging")),
    ],
)
def test_baselines(text: str, expected: Baseline) -> None:
    suite = parse_suite({**BASE, "target": {"prompt": "p@1.0.0"}, "baseline": text})
    assert suite.baseline == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"target": {"prompt": "p@1.0.0"}, "repeats": 0}, "repeats: Input should be greater"),
        ({"target": {"prompt": "p@1.0.0"}, "reducer": "median"}, "reducer: Input should be"),
        ({"target": {"prompt": "p@1.0.0"}, "gate": {"flors": {}}}, "gate.flors: unknown key"),
        ({"target": {"prompt": "p@1.0.0"}, "gate": {"alpha": 2}}, "gate.alpha:"),
        ({"target": {"prompt": "p@1.0.0"}, "baseline": "yesterday"}, "baseline: 'yesterday'"),
        ({"target": {"prompt": "p"}}, "target.prompt"),
        ({"target": {"prompt": "p@1.0.0", "alias": "fast"}}, "target: give exactly one"),
        ({"target": {"prompt": {"name": "p"}}}, "target.prompt"),
        ({"target": {"alias": "fast"}, "scorers": [{"threshold": 1}]}, "scorers: every scorer"),
        ({"target": {"alias": "fast"}, "baseline": "label:production"}, "baseline: a label"),
        ({"target": {"alias": "fast"}, "concurency": 4}, "concurency: unknown key"),
    ],
)
def test_errors_name_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_suite({**BASE, **fields}, source="suite.yaml")
    assert caught.value.message.startswith("suite.yaml: ")
    assert message in caught.value.message, caught.value.message


def test_missing_fields_are_named() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_suite({"name": "s"})
    for name in ("dataset", "target", "scorers"):
        assert f"{name}: Field required" in caught.value.message


def test_load_suite_resolves_the_dataset_beside_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "evals"
    folder.mkdir()
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump({**BASE, "target": {"alias": "fast"}}))
    suite = load_suite(path)
    assert suite.dataset_path == (folder / "d.jsonl").resolve()
    assert suite.path == path


def test_parse_target_strings() -> None:
    assert parse_target("alias:fast") == Target("alias", "fast")
    assert parse_target("prompt:a@label:b").describe() == "a@label:b"
    with pytest.raises(ValueError, match="not a target"):
        parse_target("model:x")


def test_with_target_drops_a_label_baseline_for_an_alias() -> None:
    suite = parse_suite({**BASE, "target": {"prompt": "p@1.0.0"}})
    assert suite.with_target(Target("alias", "fast")).baseline == Baseline("none")

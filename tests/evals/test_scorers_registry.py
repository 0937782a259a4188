"""The scorer registry: building from specs, errors that name the field, custom scorers."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from keel.errors import ConfigError
from keel.evals.base import CallResult, Example, Score, Scorer, ScoringCase
from keel.evals.scorers import (
    CallableScorer,
    ScorerConfigError,
    ScorerOptions,
    ScoringError,
    _registry,
    build,
    known,
    parse_options,
    register,
    register_custom,
)

BUILT_IN = [
    "bleu",
    "contains",
    "cost",
    "embedding_similarity",
    "exact",
    "icontains",
    "json_schema",
    "json_valid",
    "latency",
    "levenshtein",
    "numeric",
    "python",
    "regex",
    "rouge_l",
]


class NoGateway:
    async def chat(self, body: Mapping[str, Any]) -> CallResult:
        raise AssertionError("no calls")

    async def embed(self, alias: str, texts: Any) -> list[list[float]]:
        raise AssertionError("no calls")


def make_case(text: str, expected: Any = None) -> ScoringCase:
    output = CallResult(text, {}, latency_ms=1.0, cost_usd=0.0, input_tokens=1, output_tokens=1)
    return ScoringCase(Example(id="e", expected=expected), output, NoGateway())


@pytest.fixture
def registry() -> Iterator[dict[str, Any]]:
    """The live registry, restored after the test (custom registrations are global)."""
    known()  # loaded before the snapshot
    saved = dict(_registry._REGISTRY.factories)
    yield _registry._REGISTRY.factories
    _registry._REGISTRY.factories.clear()
    _registry._REGISTRY.factories.update(saved)


def test_known_lists_every_built_in() -> None:
    names = known()
    assert set(BUILT_IN) <= set(names)
    assert names == sorted(names)


def test_every_built_in_is_named_after_its_type_unless_renamed() -> None:
    required: dict[str, dict[str, Any]] = {
        "json_schema": {"schema": {"type": "object"}},
        "embedding_similarity": {"alias": "e"},
        "latency": {"max_ms": 1},
        "cost": {"max_usd": 1},
    }
    for name in BUILT_IN:
        if name == "python":
            continue
        assert build({"type": name, **required.get(name, {})}).name == name
        renamed = build({"type": name, "name": f"my_{name}", **required.get(name, {})})
        assert renamed.name == f"my_{name}"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"threshold": 1}, "scorers[3].type: required; known: bleu, "),
        ({"type": "exakt"}, "scorers[3].type: unknown scorer 'exakt'; known: bleu, contains,"),
        ({"type": 7}, "scorers[3].type: unknown scorer 7"),
        ({"type": "exact", "treshold": 0.5}, "scorers[3].treshold: unknown option"),
        ({"type": "exact", "threshold": 1.5}, "scorers[3].threshold: Input should be less than"),
        ({"type": "contains", "mode": "most"}, "scorers[3].mode: Input should be 'all' or 'any'"),
        ({"type": "latency"}, "scorers[3].max_ms: required option is missing"),
        ({"type": "latency", "max_ms": 5, "threshold": 1}, "scorers[3].threshold: unknown option"),
        ({"type": "cost", "max_usd": -1}, "scorers[3].max_usd: Input should be greater than"),
        ({"type": "embedding_similarity"}, "scorers[3].alias: required option is missing"),
        ({"type": "regex", "pattern": "(x"}, "scorers[3].pattern: not a valid regex"),
        ({"type": "json_schema"}, "scorers[3].schema: required option is missing"),
        (
            {"type": "json_schema", "schema": {"type": "objekt"}},
            "scorers[3].schema: not a valid JSON Schema",
        ),
        ({"type": "bleu", "max_order": 0}, "scorers[3].max_order: Input should be greater"),
        ({"type": "exact", "name": ""}, "scorers[3].name: String should have at least 1"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ScorerConfigError) as caught:
        build(spec, where="scorers[3]")
    assert str(caught.value).startswith(message), str(caught.value)
    assert isinstance(caught.value, ConfigError)  # CLI exit 2


def test_a_spec_must_be_a_mapping() -> None:
    with pytest.raises(ScorerConfigError, match=r"^scorers\[0\]: a scorer must be a mapping"):
        build(["exact"], where="scorers[0]")  # type: ignore[arg-type]


def test_every_problem_is_listed() -> None:
    with pytest.raises(ScorerConfigError) as caught:
        build({"type": "numeric", "abs_tol": -1, "colour": "red"})
    assert caught.value.problems == [
        ("abs_tol", "Input should be greater than or equal to 0"),
        ("colour", "unknown option"),
    ]


# --- register / register_custom ------------------------------------------------------


class LengthOptions(ScorerOptions):
    max_chars: int


class LengthScorer:
    def __init__(self, name: str, max_chars: int) -> None:
        self.name = name
        self.max_chars = max_chars

    async def score(self, case: ScoringCase) -> Score:
        ok = len(case.output.text) <= self.max_chars
        return Score(1.0 if ok else 0.0, ok)


async def test_register_a_factory(registry: dict[str, Any]) -> None:
    @register("max_length")
    def factory(options: Mapping[str, Any]) -> Scorer:
        opts = parse_options(LengthOptions, options)
        return LengthScorer(opts.name or "max_length", opts.max_chars)

    assert "max_length" in known()
    scorer = build({"type": "max_length", "max_chars": 3})
    assert (await scorer.score(make_case("abcd"))).passed is False
    with pytest.raises(ScorerConfigError, match=r"^max_chars: required option is missing"):
        build({"type": "max_length"})
    with pytest.raises(ValueError, match="already registered"):
        register("max_length")(factory)
    with pytest.raises(ValueError, match="already registered"):
        register("exact")(factory)
    register("max_length", replace=True)(factory)


def test_register_refuses_odd_names() -> None:
    with pytest.raises(ValueError, match="scorer name"):
        register("has space")


def test_a_factory_raising_value_error_is_a_config_error(registry: dict[str, Any]) -> None:
    @register("picky")
    def factory(options: Mapping[str, Any]) -> Scorer:
        raise ValueError("needs a rubric")

    with pytest.raises(ScorerConfigError, match=r"^scorers\[1\]: picky: needs a rubric"):
        build({"type": "picky"}, where="scorers[1]")


def starts_with_yes(case: ScoringCase) -> Score:
    ok = case.output.text.lower().startswith("yes")
    return Score(1.0 if ok else 0.0, ok, None if ok else "does not start with yes")


async def half(case: ScoringCase) -> Score:
    return Score(0.5, False)


async def test_register_custom_sync_and_async(registry: dict[str, Any]) -> None:
    register_custom("says_yes", starts_with_yes)
    register_custom("half", half, threshold=0.4)
    yes = build({"type": "says_yes"})
    assert isinstance(yes, CallableScorer)
    assert yes.name == "says_yes"
    assert await yes.score(make_case("Yes, sure")) == Score(1.0, True)
    assert await yes.score(make_case("No")) == Score(0.0, False, "does not start with yes")
    # The registered threshold recomputes passed; the suite's threshold overrides it.
    assert await build({"type": "half"}).score(make_case("x")) == Score(0.5, True)
    assert await build({"type": "half", "threshold": 0.6}).score(make_case("x")) == Score(
        0.5, False
    )
    with pytest.raises(ScorerConfigError, match=r"^colour: unknown option"):
        build({"type": "says_yes", "colour": 1})


async def test_a_custom_scorer_returning_garbage_is_a_scoring_error(
    registry: dict[str, Any],
) -> None:
    register_custom("float", lambda case: 0.5)  # type: ignore[arg-type,return-value]
    register_custom("too_big", lambda case: Score(1.5, True))
    with pytest.raises(ScoringError, match="returned float, not a Score"):
        await build({"type": "float"}).score(make_case("x"))
    with pytest.raises(ScoringError, match=r"returned value 1.5, not in \[0, 1\]"):
        await build({"type": "too_big"}).score(make_case("x"))
    with pytest.raises(ValueError, match="threshold"):
        register_custom("bad", half, threshold=2)


# --- type: python -------------------------------------------------------------------


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "my_eval_plugin.py").write_text(
        textwrap.dedent(
            """
            from keel.evals.base import Score

            def mentions_refund(case):
                ok = "refund" in case.output.text
                return Score(1.0 if ok else 0.0, ok)

            class Holder:
                async def grade(case):
                    return Score(0.7, True)

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_eval_plugin"
    sys.modules.pop("my_eval_plugin", None)


async def test_python_scorer_by_dotted_path(plugin_module: str) -> None:
    scorer = build({"type": "python", "path": f"{plugin_module}:mentions_refund"})
    assert scorer.name == "mentions_refund"
    assert (await scorer.score(make_case("a refund is due"))).passed
    nested = build(
        {"type": "python", "path": f"{plugin_module}:Holder.grade", "threshold": 0.8, "name": "g"}
    )
    assert nested.name == "g"
    assert await nested.score(make_case("x")) == Score(0.7, False)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_colon", "scorers[0].path: String should match pattern"),
        ("surely_missing_module_xyz:f", "scorers[0].path: cannot import module"),
        ("my_eval_plugin:nope", "scorers[0].path: module 'my_eval_plugin' has no attribute"),
        ("my_eval_plugin:NOT_CALLABLE", "scorers[0].path: my_eval_plugin:NOT_CALLABLE is not"),
    ],
)
def test_python_scorer_errors(plugin_module: str, path: str, message: str) -> None:
    with pytest.raises(ScorerConfigError) as caught:
        build({"type": "python", "path": path}, where="scorers[0]")
    assert str(caught.value).startswith(message), str(caught.value)


class FakeEntryPoint:
    def __init__(self, name: str, action: Any) -> None:
        self.name = name
        self.value = f"some_dist.{name}:register"
        self.action = action

    def load(self) -> Any:
        return self.action()


def test_plugins_register_through_the_entry_point_group(
    registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        seen.append(group)
        return [FakeEntryPoint("from_plugin", lambda: register_custom("from_plugin", half))]

    monkeypatch.setattr(_registry.importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(_registry._REGISTRY, "loaded", False)
    assert "from_plugin" in known()
    assert seen == ["keel.scorers"]


def test_a_plugin_that_fails_to_load_is_named(
    registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise ImportError("no module named 'torch'")

    monkeypatch.setattr(
        _registry.importlib.metadata,
        "entry_points",
        lambda *, group: [FakeEntryPoint("heavy", broken)],
    )
    monkeypatch.setattr(_registry._REGISTRY, "loaded", False)
    with pytest.raises(ScorerConfigError, match=r"scorer plugin 'heavy' .* failed to load"):
        known()


def test_the_registry_loads_nothing_heavy_at_import() -> None:
    import subprocess

    code = (
        "import sys, keel.evals, keel.evals.scorers;"
        "heavy = [m for m in ('rapidfuzz', 'jsonschema', 'keel.evals.scorers._text')"
        " if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_built_in_scorer_and_option_is_documented() -> None:
    from pydantic import BaseModel

    from keel.evals.scorers import _json, _limits, _similarity, _text

    options: dict[str, type[BaseModel]] = {
        "exact": _text.ExactOptions,
        "contains": _text.ContainsOptions,
        "icontains": _text.ContainsOptions,
        "regex": _text.RegexOptions,
        "numeric": _text.NumericOptions,
        "json_valid": _json.JsonValidOptions,
        "json_schema": _json.JsonSchemaOptions,
        "levenshtein": _similarity.LevenshteinOptions,
        "rouge_l": _similarity.RougeLOptions,
        "bleu": _similarity.BleuOptions,
        "embedding_similarity": _similarity.EmbeddingOptions,
        "latency": _limits.LatencyOptions,
        "cost": _limits.CostOptions,
    }
    assert set(options) == set(BUILT_IN) - {"python"}
    text = (Path(__file__).parents[2] / "docs" / "evals-scorers.md").read_text()
    sections = {
        name: section
        for section in text.split("\n### ")[1:]
        for name in section.splitlines()[0].split(", ")
    }
    for name, model in options.items():
        assert name in sections, f"docs/evals-scorers.md has no section for {name}"
        fields = [f.alias or key for key, f in model.model_fields.items() if key != "name"]
        missing = [f for f in fields if f"`{f}`" not in sections[name]]
        assert not missing, f"{name}: options {missing} are not documented"
    assert "{type: python, path:" in text

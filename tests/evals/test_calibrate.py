"""Judge calibration: kappa, Spearman and the 0.6 warning against hand-computed values."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from keel.errors import ConfigError
from keel.evals.base import CallResult
from keel.evals.calibrate import (
    KAPPA_FLOOR,
    Calibration,
    Confusion,
    LabelPair,
    calibrate,
    cohen_kappa,
    load_labels,
    run_calibration,
    spearman,
)
from keel.evals.scorers import ScorerConfigError
from keel.store import JudgeCache, make_engine, upgrade

ANSWER = re.compile(r"<answer>\n(.*?)\n</answer>", re.DOTALL)


class ScriptedJudge:
    """A ``GatewayClient`` fake answering each judge request by the answer it shows."""

    def __init__(self, replies: Mapping[str, str]) -> None:
        self.replies = replies
        self.calls = 0

    async def chat(self, body: Mapping[str, Any]) -> CallResult:
        self.calls += 1
        user = body["messages"][-1]["content"]
        match = ANSWER.search(user)
        text = self.replies[match.group(1)] if match else "not json"
        return CallResult(text, {}, 1.0, 0.0001, 50, 10)

    async def embed(self, alias: str, texts: Sequence[str]) -> list[list[float]]:
        raise AssertionError("never")


# --- the statistics, by hand -----------------------------------------------------------


def test_kappa_matches_the_hand_computed_value() -> None:
    # 50 items: judge yes/human yes 20, yes/no 5, no/yes 10, no/no 15.
    # p_o = 35/50 = 0.7; p_yes = 25/50 * 30/50 = 0.3; p_no = 25/50 * 20/50 = 0.2;
    # p_e = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    confusion = Confusion(20, 5, 10, 15)
    assert cohen_kappa(confusion) == pytest.approx(0.4)


def test_kappa_edge_cases() -> None:
    assert cohen_kappa(Confusion(10, 0, 0, 10)) == pytest.approx(1.0)
    assert cohen_kappa(Confusion(0, 10, 10, 0)) == pytest.approx(-1.0)
    assert cohen_kappa(Confusion(10, 0, 0, 0)) is None  # both always "pass": undefined
    assert cohen_kappa(Confusion()) is None
    # The judge always passes, the humans always fail: no agreement beyond chance.
    assert cohen_kappa(Confusion(0, 10, 0, 0)) == pytest.approx(0.0)


def test_spearman_without_ties() -> None:
    # d = (-1, 1, -1, 1, 0): rho = 1 - 6 * 4 / (5 * (25 - 1)) = 0.8.
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)


def test_spearman_with_ties_uses_average_ranks() -> None:
    # ys ranks: 5->1, 6->2, 7,7->3.5,3.5, 8->5. Deviations from the mean rank 3:
    # x: -2 -1 0 1 2; y: -2 -1 0.5 2 0.5. cov = 8, var x = 10, var y = 9.5.
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert 8 / math.sqrt(95) == pytest.approx(0.8207826816681233)


def test_spearman_is_undefined_for_constant_or_too_few_values() -> None:
    assert spearman([1, 2, 3], [4, 4, 4]) is None
    assert spearman([1], [2]) is None
    assert spearman([], []) is None
    with pytest.raises(ValueError, match="same number"):
        spearman([1, 2], [1])


def pairs(judge: str, human: str) -> list[LabelPair]:
    return [
        LabelPair(f"p{i}", human_pass=h == "1", judge_pass=j == "1")
        for i, (j, h) in enumerate(zip(judge, human, strict=True))
    ]


def test_calibrate_reports_agreement_and_no_warning_at_or_above_the_floor() -> None:
    # 10 items, one disagreement: p_o = 0.9; p_e = 0.5*0.6 + 0.5*0.4 = 0.5 -> kappa 0.8.
    result = calibrate(pairs("1111100000", "1111110000"))
    assert result.n == 10
    assert result.accuracy == pytest.approx(0.9)
    assert result.kappa == pytest.approx(0.8)
    assert result.confusion == Confusion(5, 0, 1, 4)
    assert result.disagreements == ("p5",)
    assert result.warning is None
    assert result.trustworthy
    assert result.spearman is None and result.scored == 0


def test_calibrate_warns_below_the_floor() -> None:
    result = calibrate(pairs("1111111100", "1111100000"))
    # p_o = 0.7; p_e = 0.8*0.5 + 0.2*0.5 = 0.5 -> kappa 0.4.
    assert result.kappa == pytest.approx(0.4)
    assert result.warning is not None
    assert "kappa 0.40 is below 0.6" in result.warning
    assert "a judge that disagrees with humans is noise, not a gate" in result.warning
    assert not result.trustworthy
    assert KAPPA_FLOOR == 0.6


def test_calibrate_warns_when_kappa_is_undefined() -> None:
    result = calibrate(pairs("1111", "1111"))
    assert result.kappa is None
    assert result.accuracy == 1.0
    assert result.warning is not None and "undefined" in result.warning


def test_calibrate_needs_pairs() -> None:
    with pytest.raises(ValueError, match="at least one"):
        calibrate([])


def test_as_dict_is_json_ready() -> None:
    result = calibrate(pairs("10", "11"))
    data = orjson.loads(orjson.dumps(result.as_dict()))
    assert data == {
        "n": 2,
        "accuracy": 0.5,
        "kappa": 0.0,
        "spearman": None,
        "scored": 0,
        "confusion": {
            "both_pass": 1,
            "judge_pass_human_fail": 0,
            "judge_fail_human_pass": 1,
            "both_fail": 0,
        },
        "errors": 0,
        "disagreements": ["p1"],
        "kappa_floor": 0.6,
        "trustworthy": False,
        "warning": data["warning"],
        "judge_usage": None,
    }
    assert "below 0.6" in data["warning"]


# --- labels files ----------------------------------------------------------------------


def write_labels(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.write_text("\n".join(orjson.dumps(r).decode() for r in rows) + "\n\n")
    return path


def test_load_labels(tmp_path: Path) -> None:
    path = write_labels(
        tmp_path / "human.jsonl",
        [
            {"id": "a", "output": "x", "pass": True},
            {"id": 2, "output": "y", "pass": False, "score": 2, "reference": "r", "context": "c"},
            {"id": "c", "output": "z", "pass": True, "score": 4.5, "context": ["d1", "d2"]},
        ],
    )
    labels = load_labels(path)
    assert [(lb.id, lb.human_pass, lb.human_score) for lb in labels] == [
        ("a", True, None),
        ("2", False, 2.0),
        ("c", True, 4.5),
    ]
    assert labels[1].reference == "r"
    assert labels[1].context == ("c",)
    assert labels[2].context == ("d1", "d2")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", ":1: not JSON"),
        ("[1]", ":1: "),
        ('{"id": "a", "output": "x"}', ":1: pass:"),
        ('{"id": "a", "output": "x", "pass": "yes"}', ":1: pass:"),
        ('{"id": "a", "output": 3, "pass": true}', ":1: output:"),
        ('{"id": "a", "output": "x", "pass": true, "score": "high"}', ":1: score:"),
        ('{"id": "a", "output": "x", "pass": true, "verdict": 1}', ":1: verdict: unknown field"),
        ('{"id": "", "output": "x", "pass": true}', ":1: id: must not be empty"),
    ],
)
def test_bad_label_lines_name_the_line_and_field(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "human.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_labels(path)
    assert f"{path}{problem}" in caught.value.message


def test_duplicate_ids_missing_and_empty_files_are_errors(tmp_path: Path) -> None:
    row = {"id": "a", "output": "x", "pass": True}
    with pytest.raises(ConfigError, match=":2: id: 'a' appears twice"):
        load_labels(write_labels(tmp_path / "dup.jsonl", [row, row]))
    with pytest.raises(ConfigError, match="no labels"):
        load_labels(write_labels(tmp_path / "empty.jsonl", []))
    with pytest.raises(ConfigError, match="cannot read"):
        load_labels(tmp_path / "missing.jsonl")


# --- run_calibration: the judge on a fixed label set --------------------------------------

# Ten labelled outputs. Humans pass the first six; the judge passes 0-4 and 6,
# and fails on 5 (it never answers JSON: an error, counted as "fail").
HUMAN_PASS = [True] * 6 + [False] * 4
JUDGE_PASS = [True] * 5 + [False, True, False, False, False]
# Human scores 10..1 (none for the erroring 5); the judge's (0-1 scale) rank
# the same except that 0 and 1 swap places.
HUMAN_SCORE = [10, 9, 8, 7, 6, None, 4, 3, 2, 1]
JUDGE_SCORE = [0.9, 1.0, 0.8, 0.7, 0.6, None, 0.4, 0.3, 0.2, 0.1]


def label_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(10):
        row: dict[str, Any] = {"id": f"l{i}", "output": f"answer {i}", "pass": HUMAN_PASS[i]}
        if HUMAN_SCORE[i] is not None:
            row["score"] = HUMAN_SCORE[i]
        rows.append(row)
    return rows


def judge_replies() -> dict[str, str]:
    replies = {}
    for i in range(10):
        reply = {"score": JUDGE_SCORE[i], "pass": JUDGE_PASS[i], "reason": f"r{i}"}
        replies[f"answer {i}"] = "no verdict" if i == 5 else orjson.dumps(reply).decode()
    return replies


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'keel.db'}")
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


SPEC = {"type": "judge", "alias": "judge", "rubric": "Helpful and correct.", "scale": "0-1"}


async def test_run_calibration_on_a_fixed_label_set(tmp_path: Path, engine: sa.Engine) -> None:
    labels = write_labels(tmp_path / "human.jsonl", label_rows())
    gateway = ScriptedJudge(judge_replies())

    result = await run_calibration(labels, gateway, SPEC, cache=JudgeCache(engine))

    # Confusion: both pass 0-4 (5), judge fail/human pass 5 (1), judge pass/human
    # fail 6 (1), both fail 7-9 (3). p_o = 0.8; p_e = 0.6*0.6 + 0.4*0.4 = 0.52;
    # kappa = 0.28 / 0.48 = 0.58333...: below 0.6, so a warning.
    assert result.confusion == Confusion(5, 1, 1, 3)
    assert result.n == 10
    assert result.accuracy == pytest.approx(0.8)
    assert result.kappa == pytest.approx(0.28 / 0.48)
    assert result.kappa == pytest.approx(0.5833333)
    assert result.warning is not None and "kappa 0.58 is below 0.6" in result.warning
    # Nine scored pairs, one swap: sum d^2 = 2; rho = 1 - 6*2 / (9*80) = 0.98333...
    assert result.scored == 9
    assert result.spearman == pytest.approx(1 - 12 / 720)
    assert result.errors == 1
    assert result.disagreements == ("l5", "l6")
    # Nine verdicts and two tries at the one that never came.
    assert gateway.calls == 11
    assert result.usage is not None and result.usage.calls == 11

    again = ScriptedJudge(judge_replies())
    repeat = await run_calibration(labels, again, SPEC, cache=JudgeCache(engine))
    assert again.calls == 2  # only the erroring example is asked again
    assert repeat == result


async def test_run_calibration_with_an_agreeing_judge_has_no_warning(tmp_path: Path) -> None:
    rows = [{"id": f"l{i}", "output": f"answer {i}", "pass": i < 5} for i in range(10)]
    replies = {
        f"answer {i}": orjson.dumps({"score": 1 if i < 5 else 0, "pass": i < 5}).decode()
        for i in range(10)
    }
    result = await run_calibration(
        write_labels(tmp_path / "human.jsonl", rows), ScriptedJudge(replies), SPEC
    )
    assert isinstance(result, Calibration)
    assert (result.kappa, result.accuracy, result.warning) == (1.0, 1.0, None)


async def test_run_calibration_of_groundedness(tmp_path: Path) -> None:
    rows = [
        {"id": "g", "output": "answer 1", "pass": True, "context": ["doc"]},
        {"id": "u", "output": "answer 2", "pass": False, "context": ["doc"]},
    ]
    replies = {
        "answer 1": '{"claims": [{"claim": "a", "supported": true}]}',
        "answer 2": '{"claims": [{"claim": "a", "supported": false}]}',
    }
    result = await run_calibration(
        write_labels(tmp_path / "human.jsonl", rows),
        ScriptedJudge(replies),
        {"type": "groundedness", "alias": "judge"},
    )
    assert result.kappa == pytest.approx(1.0)


async def test_run_calibration_rejects_other_scorers_and_bad_options(tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "human.jsonl", [{"id": "a", "output": "x", "pass": True}])
    with pytest.raises(ScorerConfigError, match="type: expected 'judge' or 'groundedness'"):
        await run_calibration(labels, ScriptedJudge({}), {"type": "exact"})
    with pytest.raises(ScorerConfigError, match="alias"):
        await run_calibration(labels, ScriptedJudge({}), {"type": "judge", "rubric": "r"})

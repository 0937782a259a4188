"""``keel traces list`` and ``keel traces show``."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from cli_support import DAY, NOW, Invoke, failed_over, make_record, one_error_line
from click.testing import CliRunner

from keel.cli.main import cli
from keel.store import RequestStore


def test_list_shows_a_table_newest_first(keel: Invoke, write: Callable[..., None]) -> None:
    write(make_record("req-old", started_at=NOW - 120), failed_over("req-new", started_at=NOW))
    result = keel("traces", "list")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.index("req-new") < out.index("req-old")
    assert "fast → sim/model-a" in out
    failed = next(line for line in out.splitlines() if "req-new" in line)
    assert " 502 " in failed
    assert "$0.1400" in out  # known cost
    assert "unknown" in out  # the failed request's cost is not $0
    assert "100/20" in out and "420 ms" in out


@pytest.mark.parametrize("columns", [80, 100])
def test_list_on_a_narrow_terminal_drops_columns_instead_of_folding_them(
    keel_yaml: str, write: Callable[..., None], columns: int
) -> None:
    # Request ids as long as the gateway's own (32 characters).
    ok, failed = "0" * 31 + "1", "0" * 31 + "2"
    write(make_record(ok, started_at=NOW - 60), failed_over(failed, started_at=NOW))
    result = CliRunner(env={"COLUMNS": str(columns)}).invoke(
        cli, ["traces", "list", "-c", keel_yaml]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    # One line per request, each with its whole id, outcome, cost and latency.
    [ok_line] = [line for line in lines if ok in line]
    [failed_line] = [line for line in lines if failed in line]
    assert " ok " in ok_line and "$0.1400" in ok_line and "420 ms" in ok_line
    assert " 502 " in failed_line and "unknown" in failed_line and "2,500 ms" in failed_line
    caption = " ".join(lines[lines.index(ok_line) + 1 :])
    assert "too narrow for" in caption and "tries" in caption
    assert "request id" not in caption and "status" not in caption  # never given up
    if columns == 100:  # room for the token counts, not yet for the deployment
        assert "100/20" in ok_line and "alias → deployment" in caption


def test_list_narrower_than_its_fixed_columns_prints_wider(
    keel_yaml: str, write: Callable[..., None]
) -> None:
    request_id = "0" * 31 + "1"
    write(make_record(request_id))
    runner = CliRunner(env={"COLUMNS": "40"})
    result = runner.invoke(cli, ["traces", "list", "-c", keel_yaml])
    assert result.exit_code == 0, result.output
    assert any(request_id in line for line in result.stdout.splitlines())  # whole, not cropped
    empty = runner.invoke(cli, ["traces", "list", "--tenant", "nobody", "-c", keel_yaml])
    assert "no requests" in empty.stdout and "too narrow" not in empty.stdout


def test_list_filters(keel: Invoke, write: Callable[..., None]) -> None:
    write(
        make_record("a-ok"),
        make_record("b-other", tenant="globex", alias="smart", prompt_version="4"),
        failed_over("c-err"),
        make_record("d-old", started_at=NOW - 3 * DAY),
    )

    def ids(*args: str) -> list[str]:
        result = keel("traces", "list", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return sorted(row["request_id"] for row in json.loads(result.stdout))

    assert ids() == ["a-ok", "b-other", "c-err", "d-old"]
    assert ids("--tenant", "globex") == ["b-other"]
    assert ids("--status", "ok") == ["a-ok", "b-other", "d-old"]
    assert ids("--errors") == ["c-err"]
    assert ids("--alias", "smart") == ["b-other"]
    assert ids("--prompt-version", "4") == ["b-other"]
    assert ids("--since", "24h") == ["a-ok", "b-other", "c-err"]
    assert ids("--slow", "1000") == ["c-err"]
    newest_two = ids("--limit", "2")
    assert len(newest_two) == 2 and "d-old" not in newest_two


def test_list_json_is_complete_and_honest_about_cost(
    keel: Invoke, write: Callable[..., None]
) -> None:
    write(make_record("req-1"), failed_over("req-2", started_at=NOW - 30))
    listed = json.loads(keel("traces", "list", "--format", "json").stdout)
    rows = {r["request_id"]: r for r in listed}
    assert rows["req-1"]["cost_usd"] == 0.14
    assert rows["req-2"]["cost_usd"] is None
    assert "cost_nano" not in rows["req-1"]
    assert rows["req-1"]["content"]["response_text"] == "stored answer"
    assert rows["req-2"]["detail"]["attempts"][0]["outcome"] == "provider_unavailable"
    assert rows["req-1"]["started_at"].endswith("+00:00")


def test_list_refuses_bad_options_in_one_line(keel: Invoke) -> None:
    assert "--since" in one_error_line(keel("traces", "list", "--since", "yesterday"))
    assert "--limit" in one_error_line(keel("traces", "list", "--limit", "0"))
    assert "--slow" in one_error_line(keel("traces", "list", "--slow", "-5"))


def test_show_tells_the_whole_story(
    keel: Invoke, write: Callable[..., None], store: RequestStore
) -> None:
    write(make_record("req-1"))
    store.add_feedback("req-1", tenant=None, score=1.0, comment="spot on", tags=["helpful"])
    result = keel("traces", "show", "req-1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "acme",
        "u-1",
        "support v3",
        "100 in (40 cached) / 20 out",
        "$0.1400",
        "420 ms",
        "spot on",
        "helpful",
        "1 (positive)",
        "What is Keel?",
        "stored answer",
    ):
        assert expected in out, expected
    # The tree: the attempt hangs under the route stage, one level deeper.
    lines = out.splitlines()
    route = next(line for line in lines if "route" in line and "+3.5 ms" in line)
    attempt = next(line for line in lines if "attempt 1 sim/model-a" in line)
    assert attempt.index("attempt") > route.index("route")
    assert "ok 200" in attempt


def test_show_failed_request_lists_every_attempt(keel: Invoke, write: Callable[..., None]) -> None:
    write(failed_over("req-err"))
    out = keel("traces", "show", "req-err").stdout
    assert "provider_unavailable 503" in out
    assert "attempt 2 sim/model-b" in out and "provider_timeout" in out
    assert "served by fallback smart" in out
    assert "no feedback" in out
    assert "content not captured" in out
    assert "unknown" in out


def test_show_json(keel: Invoke, write: Callable[..., None], store: RequestStore) -> None:
    write(make_record("req-1"))
    store.add_feedback("req-1", tenant=None, score=0.0, comment=None, tags=[])
    data = json.loads(keel("traces", "show", "req-1", "--format", "json").stdout)
    assert data["request_id"] == "req-1"
    assert data["feedback"][0]["score"] == 0.0
    assert data["detail"]["stages"][-1]["name"] == "route"


def test_show_sees_every_tenant(keel: Invoke, write: Callable[..., None]) -> None:
    write(make_record("req-g", tenant="globex"))
    result = keel("traces", "show", "req-g")
    assert result.exit_code == 0 and "globex" in result.stdout


def test_show_missing_request_is_one_line_exit_2(keel: Invoke) -> None:
    line = one_error_line(keel("traces", "show", "nope"))
    assert "no stored request 'nope'" in line

"""``keel cost report``, ``keel cost useful`` and ``keel cost project``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cli_support import DAY, NOW, Invoke, failed_over, make_record, one_error_line
from click.testing import CliRunner

from keel.cli.main import cli
from keel.costs import SECONDS_PER_MONTH
from keel.store import RequestStore


@pytest.fixture
def spend(write: Callable[..., None]) -> None:
    write(
        make_record("a1"),
        make_record("a2", feature="search", cost_usd=0.5),
        failed_over("a3"),  # acme/support, unknown cost
        make_record("g1", tenant="globex", cost_usd=0.25),
        make_record("g2", tenant="globex", cost_usd=None, provider_model="model-b"),
        make_record("old", started_at=NOW - 60 * DAY, cost_usd=9.0),  # outside 30d
    )


def _report(keel: Invoke, *args: str) -> dict:
    result = keel("cost", "report", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.usefixtures("spend")
def test_report_by_tenant_and_feature_totals_match_rows(keel: Invoke) -> None:
    data = _report(keel, "--by", "tenant,feature")
    rows = {(r["tenant"], r["feature"]): r for r in data["rows"]}
    assert set(rows) == {("acme", "support"), ("acme", "search"), ("globex", "support")}
    assert rows["acme", "support"]["requests"] == 2
    assert rows["acme", "support"]["cost_usd"] == pytest.approx(0.14)
    assert rows["acme", "support"]["unknown_cost_requests"] == 1
    total = data["total"]
    for field in ("requests", "errors", "input_tokens", "output_tokens", "unknown_cost_requests"):
        assert total[field] == sum(r[field] for r in data["rows"]), field
    assert total["cost_usd"] == pytest.approx(sum(r["cost_usd"] or 0 for r in data["rows"]))
    assert total["requests"] == 5  # the 60-day-old request is outside --since 30d


@pytest.mark.usefixtures("spend")
def test_unknown_cost_is_never_zero(keel: Invoke) -> None:
    data = _report(keel, "--by", "provider_model")
    model_b = next(r for r in data["rows"] if r["provider_model"] == "model-b")
    assert model_b["cost_usd"] is None and model_b["unknown_cost_requests"] == 2
    table = keel("cost", "report", "--by", "provider_model").stdout
    assert "unknown-cost" in table and "unknown" in table
    assert "≥$0.8900" in table  # the total is a floor, not the whole cost
    assert "total" in table


@pytest.mark.usefixtures("spend")
def test_report_table_has_a_total_row(keel: Invoke) -> None:
    out = keel("cost", "report", "--by", "tenant,feature").stdout
    total = next(line for line in out.splitlines() if line.strip().startswith("total"))
    assert "5" in total and "≥$0.8900" in total


@pytest.mark.usefixtures("spend")
def test_report_on_a_narrow_terminal_keeps_every_number_whole(keel_yaml: str) -> None:
    by = "tenant,feature,alias,provider_model"
    result = CliRunner(env={"COLUMNS": "60"}).invoke(
        cli, ["cost", "report", "--by", by, "-c", keel_yaml]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "requests" in line and "tenant" in line)
    assert header.split()[:4] == by.split(",")  # no header broken in two
    total = next(line for line in lines if line.strip().startswith("total"))
    # Wider than the terminal rather than cut: the total's cost and its count
    # of unknown-price requests (the last column) are both there.
    assert total.split()[-2:] == ["≥$0.8900", "2"]


@pytest.mark.usefixtures("spend")
def test_csv_parses_and_keeps_unknown_apart(keel: Invoke) -> None:
    result = keel("cost", "report", "--by", "tenant,day", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["tenant"] for r in rows} == {"acme", "globex"}
    globex = next(r for r in rows if r["tenant"] == "globex")
    assert globex["requests"] == "2" and globex["unknown_cost_requests"] == "1"
    assert float(globex["cost_usd"]) == pytest.approx(0.25)
    assert all(len(r["day"]) == 10 for r in rows)


def test_csv_leaves_an_unknown_cost_empty(keel: Invoke, write: Callable[..., None]) -> None:
    write(make_record("u1", cost_usd=None))
    result = keel("cost", "report", "--format", "csv")
    (row,) = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row["cost_usd"] == "" and row["unknown_cost_requests"] == "1"


@pytest.mark.usefixtures("spend")
def test_report_until_and_tenant(keel: Invoke) -> None:
    until = (datetime.now(UTC) - timedelta(days=45)).date().isoformat()
    old = _report(keel, "--since", "90d", "--until", until)
    assert old["total"]["requests"] == 1 and old["total"]["cost_usd"] == pytest.approx(9.0)
    assert old["until"] == until
    one = _report(keel, "--tenant", "globex", "--by", "feature")
    assert one["total"]["requests"] == 2


def test_bad_report_options_are_one_line(keel: Invoke) -> None:
    line = one_error_line(keel("cost", "report", "--by", "tenant,colour"))
    assert "--by" in line and "'colour'" in line and "provider_model" in line
    assert "--until" in one_error_line(keel("cost", "report", "--until", "tomorrow"))
    assert "--since" in one_error_line(keel("cost", "report", "--since", "a while"))


def test_useful_is_cost_per_positively_rated_output(
    keel: Invoke, write: Callable[..., None], store: RequestStore
) -> None:
    write(
        make_record("v3-a", cost_usd=0.2),
        make_record("v3-b", cost_usd=0.2),
        make_record("v4-a", prompt_version="4", cost_usd=0.3),
    )
    store.add_feedback("v3-a", tenant=None, score=1.0, comment=None, tags=[])
    store.add_feedback("v3-b", tenant=None, score=0.0, comment=None, tags=[])
    result = keel("cost", "useful", "--by", "prompt_version", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {r["group"]["prompt_version"]: r for r in json.loads(result.stdout)["rows"]}
    assert rows["3"]["useful"] == 1
    assert rows["3"]["cost_per_useful"] == pytest.approx(0.4)
    assert rows["4"]["cost_per_useful"] is None  # nothing rated useful yet
    table = keel("cost", "useful").stdout
    assert "$0.4000" in table and "cost per" in table
    assert "--by" in one_error_line(keel("cost", "useful", "--by", "tenant"))


def test_project_scales_the_observed_mix(keel: Invoke, write: Callable[..., None]) -> None:
    write(
        make_record("p1", cost_usd=0.01),
        make_record("p2", cost_usd=0.03),
        make_record("p3", cost_usd=0.02),
        make_record("p4", cost_usd=None, provider_model="model-b"),
    )
    result = keel("cost", "project", "--qps", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    per_month = 2 * SECONDS_PER_MONTH
    assert data["requests_per_month"] == per_month
    # $0.06 over 4 observed requests; the unpriced quarter adds nothing.
    assert data["monthly_usd"] == pytest.approx(0.06 / 4 * per_month)
    assert data["unknown_share"] == pytest.approx(0.25)
    models = {m["name"]: m for m in data["models"]}
    assert models["model-a"]["cost_per_request_usd"] == pytest.approx(0.02)
    assert models["model-b"]["cost_per_request_usd"] is None
    table = keel("cost", "project", "--qps", "2").stdout
    assert "25.0% of traffic has an unknown price" in table
    assert "≥$77,760.00" in table  # 0.015 x 5,184,000


def test_project_refuses_without_traffic_or_qps(keel: Invoke) -> None:
    assert "--window" in one_error_line(keel("cost", "project", "--qps", "5"))
    assert "--qps" in one_error_line(keel("cost", "project", "--qps", "0"))
    assert "--window" in one_error_line(keel("cost", "project", "--qps", "1", "--window", "x"))

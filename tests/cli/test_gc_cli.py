"""``keel gc``: never prompts where nobody can answer; deletes in batches with --yes."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from cli_support import DAY, NOW, Invoke, make_record, one_error_line

from keel.store import RequestStore, TraceFilter


@pytest.fixture
def aged(write: Callable[..., None], store: RequestStore) -> None:
    write(
        *(make_record(f"old-{i}", started_at=NOW - 40 * DAY - i) for i in range(5)),
        make_record("new"),
    )
    store.add_feedback("old-0", tenant=None, score=1.0, comment=None, tags=[])


def _stored(store: RequestStore) -> list[str]:
    return sorted(r.request_id for r in store.list_requests(TraceFilter(), limit=100))


@pytest.mark.usefixtures("aged")
def test_without_a_tty_it_refuses_unless_yes(keel: Invoke, store: RequestStore) -> None:
    line = one_error_line(keel("gc", "--older-than", "30d"))
    assert "--yes" in line and "not a terminal" in line
    assert len(_stored(store)) == 6


@pytest.mark.usefixtures("aged")
def test_yes_deletes_old_requests_in_batches(keel: Invoke, store: RequestStore) -> None:
    result = keel("gc", "--older-than", "30d", "--batch", "2", "--yes")
    assert result.exit_code == 0, result.output
    assert "deleted 5 stored requests" in result.stdout
    assert _stored(store) == ["new"]
    # Rollups are kept: the spend of deleted requests is still reported.
    report = json.loads(keel("cost", "report", "--since", "60d", "--format", "json").stdout)
    assert report["total"]["requests"] == 6


@pytest.mark.usefixtures("aged")
def test_interactive_shell_asks_first(
    keel: Invoke, store: RequestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("keel.cli.gc.stdin_is_interactive", lambda: True)
    declined = keel("gc", "--older-than", "30d", input="n\n")
    assert declined.exit_code == 1 and "Delete stored requests" in declined.output
    assert len(_stored(store)) == 6
    accepted = keel("gc", "--older-than", "30d", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert _stored(store) == ["new"]


def test_bad_options_are_one_line(keel: Invoke) -> None:
    assert "--older-than" in one_error_line(keel("gc", "--older-than", "soon", "--yes"))
    assert "--batch" in one_error_line(keel("gc", "--older-than", "30d", "--batch", "0", "--yes"))


def test_nothing_to_delete(keel: Invoke) -> None:
    result = keel("gc", "--older-than", "1d", "--yes")
    assert result.exit_code == 0 and "deleted 0 stored requests" in result.stdout

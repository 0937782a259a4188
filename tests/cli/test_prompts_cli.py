"""``keel prompts``: lint, push, promote, rollback, history, diff, list, show."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from cli_support import Invoke, one_error_line
from click.testing import CliRunner, Result

from keel.cli.main import cli
from keel.cli.tenants import default_actor
from keel.config import load_config
from keel.store import AuditStore, PromptRegistry, make_engine, record_eval_run, upgrade


def prompt_doc(version: str = "1.0.0", **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "rag-answer",
        "version": version,
        "description": "Answers from the retrieved context.",
        "model": "fast",
        "params": {"temperature": 0.2},
        "messages": [
            {"role": "system", "content": "Answer only from the context."},
            {"role": "user", "content": "{{ question }}"},
        ],
        "variables": {"question": {"type": "string"}},
    }
    doc.update(changes)
    return doc


def write_prompts(folder: Path, *docs: dict[str, Any]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    for doc in docs:
        (folder / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(folder)


@pytest.fixture
def engine(keel_yaml: str) -> Iterator[sa.Engine]:
    engine = make_engine(load_config(keel_yaml).database_url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "prompts"


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return str(result.stdout)


def passed(engine: sa.Engine, version: str) -> int:
    return record_eval_run(
        engine,
        suite="rag-golden",
        prompt_name="rag-answer",
        prompt_version=version,
        dataset_hash="sha256:d1",
        passed=True,
    ).id


# --- lint and push ----------------------------------------------------------------------


def test_push_stores_new_versions_and_repushing_changes_nothing(
    keel: Invoke, folder: Path, engine: sa.Engine
) -> None:
    path = write_prompts(folder, prompt_doc(), prompt_doc(name="classify", version="0.1.0"))
    out = ok(keel("prompts", "push", path))
    assert "new" in out and "rag-answer 1.0.0" in out and "2 new, 0 unchanged" in out

    again = json.loads(ok(keel("prompts", "push", path, "--format", "json")))
    assert {(r["name"], r["status"]) for r in again} == {
        ("rag-answer", "unchanged"),
        ("classify", "unchanged"),
    }
    [stored] = PromptRegistry(engine).versions("rag-answer")
    assert stored.created_by == default_actor()


def test_lint_refuses_a_shape_change_without_a_major_bump(keel: Invoke, folder: Path) -> None:
    ok(keel("prompts", "push", write_prompts(folder, prompt_doc())))
    changed = prompt_doc(
        "1.1.0",
        variables={"question": {"type": "string"}, "context": {"type": "string"}},
        messages=[{"role": "user", "content": "{{ context }} {{ question }}"}],
    )
    path = write_prompts(folder, changed)

    result = keel("prompts", "lint", path)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "error" in result.stdout and "major" in result.stdout
    assert "against the registry" in result.stdout

    pushed = keel("prompts", "push", path)
    assert pushed.exit_code == 1 and "nothing pushed" in pushed.stderr
    # A major bump is what the shape change needs.
    ok(keel("prompts", "lint", write_prompts(folder, {**changed, "version": "2.0.0"})))


def test_lint_refuses_a_mutated_version_and_push_writes_nothing(
    keel: Invoke, folder: Path, engine: sa.Engine
) -> None:
    ok(keel("prompts", "push", write_prompts(folder, prompt_doc())))
    path = write_prompts(folder, prompt_doc(params={"temperature": 0.9}))

    result = keel("prompts", "lint", path, "--format", "json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["errors"] >= 1
    messages = " ".join(f["message"] for f in doc["findings"])
    assert "0.9" in messages  # the diff is shown

    assert keel("prompts", "push", path).exit_code == 1
    [stored] = PromptRegistry(engine).versions("rag-answer")
    assert stored.content["params"] == {"temperature": 0.2}


def test_lint_works_without_a_registry(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_prompts(folder, prompt_doc())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # no keel.yaml here
    runner = CliRunner(env={"COLUMNS": "250"})
    result = runner.invoke(cli, ["prompts", "lint", path])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "without the registry" in result.stdout

    broken = write_prompts(folder, prompt_doc(version="one"))
    refused = runner.invoke(cli, ["prompts", "lint", broken, "--offline"])
    assert refused.exit_code == 1, (refused.stdout, refused.stderr)
    row = next(line for line in refused.stdout.splitlines() if "rag-answer.yaml" in line)
    assert "error" in row and "version" in row


def test_lint_with_an_explicit_missing_config_is_an_error(folder: Path) -> None:
    path = write_prompts(folder, prompt_doc())
    runner = CliRunner()
    result = runner.invoke(cli, ["prompts", "lint", path, "-c", str(folder / "nope.yaml")])
    assert result.exit_code == 2 and "nope.yaml" in result.stderr


# --- labels -----------------------------------------------------------------------------


def test_promote_needs_a_passing_eval_run(keel: Invoke, folder: Path, engine: sa.Engine) -> None:
    ok(keel("prompts", "push", write_prompts(folder, prompt_doc())))

    line = one_error_line(keel("prompts", "promote", "rag-answer", "1.0.0"))
    assert "not qualified for promotion" in line and "--force" in line

    run = passed(engine, "1.0.0")
    out = ok(keel("prompts", "promote", "rag-answer", "1.0.0", "--label", "production"))
    assert "rag-answer production → 1.0.0" in out and f"eval run #{run}" in out
    assert "within 5 seconds" in out
    again = ok(keel("prompts", "promote", "rag-answer", "1.0.0"))
    assert "already points at 1.0.0" in again


def test_forced_promotion_needs_a_reason_and_is_audited(
    keel: Invoke, folder: Path, engine: sa.Engine
) -> None:
    ok(keel("prompts", "push", write_prompts(folder, prompt_doc())))
    line = one_error_line(keel("prompts", "promote", "rag-answer", "1.0.0", "--force"))
    assert "--reason" in line

    out = ok(
        keel(
            "prompts",
            "promote",
            "rag-answer",
            "1.0.0",
            "--label",
            "staging",
            "--force",
            "--reason",
            "eval suite is down",
            "--actor",
            "ops:carol",
        )
    )
    assert "FORCED" in out and "eval suite is down" in out
    [audit] = AuditStore(engine).list(action="prompt.promote")
    assert (audit.actor, audit.reason) == ("ops:carol", "eval suite is down")
    assert audit.after is not None and audit.after["forced"] is True


def test_unknown_prompt_or_version_is_one_error_line(keel: Invoke, folder: Path) -> None:
    ok(keel("prompts", "push", write_prompts(folder, prompt_doc())))
    assert "no version 9.0.0" in one_error_line(keel("prompts", "promote", "rag-answer", "9.0.0"))
    assert "no prompt nope" in one_error_line(keel("prompts", "history", "nope"))
    assert "no prompt nope" in one_error_line(keel("prompts", "show", "nope"))


def test_rollback_and_history(keel: Invoke, folder: Path, engine: sa.Engine) -> None:
    for version in ("1.0.0", "1.1.0"):
        ok(keel("prompts", "push", write_prompts(folder, prompt_doc(version))))
        run = passed(engine, version)
        ok(keel("prompts", "promote", "rag-answer", version, "--reason", f"ship {version}"))

    out = ok(keel("prompts", "rollback", "rag-answer", "--reason", "regressed", "--actor", "ops:d"))
    assert "rag-answer production → 1.0.0 (was 1.1.0), rolled back" in out
    assert PromptRegistry(engine).resolve("rag-answer", "production").version == "1.0.0"
    line = one_error_line(keel("prompts", "rollback", "rag-answer"))
    assert "nothing to roll back to" in line

    table = ok(keel("prompts", "history", "rag-answer"))
    rows = [line for line in table.splitlines() if "production" in line]
    assert len(rows) == 3
    assert "rollback" in rows[0] and "ops:d" in rows[0] and "regressed" in rows[0]
    assert "1.0.0 → 1.1.0" in rows[1] and f"#{run}" in rows[1] and "ship 1.1.0" in rows[1]
    doc = json.loads(ok(keel("prompts", "history", "rag-answer", "--format", "json")))
    assert [m["kind"] for m in doc] == ["rollback", "promote", "promote"]
    assert doc[1]["eval_run_id"] == run and doc[1]["actor"] == default_actor()


# --- reads ------------------------------------------------------------------------------


def test_diff_list_and_show(keel: Invoke, folder: Path, engine: sa.Engine) -> None:
    ok(keel("prompts", "push", write_prompts(folder, prompt_doc())))
    ok(
        keel(
            "prompts",
            "push",
            write_prompts(folder, prompt_doc("1.1.0", params={"temperature": 0.5})),
        )
    )
    passed(engine, "1.1.0")
    ok(keel("prompts", "promote", "rag-answer", "1.1.0"))

    diff = ok(keel("prompts", "diff", "rag-answer", "1.0.0", "1.1.0"))
    assert "0.2" in diff and "0.5" in diff
    same = ok(keel("prompts", "diff", "rag-answer", "1.0.0", "1.0.0"))
    assert "same content" in same

    listing = ok(keel("prompts", "list"))
    assert "rag-answer" in listing and "production=1.1.0" in listing
    [summary] = json.loads(ok(keel("prompts", "list", "--format", "json")))
    assert summary["latest"] == "1.1.0" and summary["versions"] == 2

    versions = ok(keel("prompts", "show", "rag-answer"))
    assert "1.1.0" in versions and "production" in versions
    shown = ok(keel("prompts", "show", "rag-answer", "--label", "production"))
    assert shown.startswith("# rag-answer 1.1.0  sha256:")
    body = yaml.safe_load(shown)
    assert body["version"] == "1.1.0" and body["params"] == {"temperature": 0.5}
    old = json.loads(
        ok(keel("prompts", "show", "rag-answer", "--version", "1.0.0", "--format", "json"))
    )
    assert old["content"]["params"] == {"temperature": 0.2}
    both = keel("prompts", "show", "rag-answer", "--version", "1.0.0", "--label", "production")
    assert "not both" in one_error_line(both)


def test_codegen_writes_a_typed_module(tmp_path: Path, folder: Path) -> None:
    path = write_prompts(folder, prompt_doc())
    target = tmp_path / "prompt_types.py"
    result = CliRunner().invoke(cli, ["prompts", "codegen", path, "-o", str(target)])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "wrote 1 prompt model(s)" in result.stdout
    namespace: dict[str, Any] = {}
    exec(compile(target.read_text(), str(target), "exec"), namespace)
    model = namespace["PROMPTS"]["rag-answer"]
    assert model(question="why?").variables() == {"question": "why?"}
    printed = CliRunner().invoke(cli, ["prompts", "codegen", path])
    assert printed.stdout == target.read_text()

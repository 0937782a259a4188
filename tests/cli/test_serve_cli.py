"""`keel serve` refuses set-ups that would quietly break a guarantee."""

from __future__ import annotations

from pathlib import Path

import yaml
from cli_support import CONFIG
from click.testing import CliRunner

from keel.cli.main import cli


def test_several_workers_with_in_memory_limits_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keel.yaml"
    raw = {
        "database_url": f"sqlite:///{tmp_path / 'keel.db'}",
        **CONFIG,
        "tiers": {"free": {"tenant": {"rpm": 10}}},
    }
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["serve", "-c", str(path), "--workers", "2"])
    assert result.exit_code == 2
    assert "limits.backend: memory keeps limits per process" in result.output
    assert "set limits.backend: redis" in result.output

"""The SDK tests' gateway, prompts, clock and request counter."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from e2e_support import Cluster, Process

# The gateway needs one model alias for the prompts' `model`; the simulator serves it.
GATEWAY = {
    "providers": {"sim": {"kind": "simulator", "seed": 3}},
    "models": [{"alias": "fast", "deployments": [{"provider": "sim", "model": "sim-fast"}]}],
}
TTL_S = 60.0
PROMOTE = ("prompts", "promote")


def greet(version: str, greeting: str = "Hello") -> dict[str, Any]:
    return {
        "name": "greet",
        "version": version,
        "model": "fast",
        "params": {"max_tokens": 20},
        "messages": [
            {
                "role": "system",
                "content": f"{greeting} {{{{ who }}}}, answer in {{{{ language }}}}.",
            },
            {"role": "user", "content": "Say hi to {{ who }}."},
        ],
        "variables": {
            "who": {"type": "string", "min_length": 1},
            "language": {"type": "string", "enum": ["English", "French"], "default": "English"},
        },
    }


def keel(cluster: Cluster, *args: str) -> str:
    done = cluster.keel(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def push(cluster: Cluster, doc: dict[str, Any]) -> None:
    """``keel prompts push`` of one prompt file."""
    folder = Path(tempfile.mkdtemp(prefix="prompts-", dir=cluster.workdir))
    (folder / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    keel(cluster, "prompts", "push", str(folder))


def promote(cluster: Cluster, name: str, version: str) -> None:
    keel(cluster, *PROMOTE, name, version, "--label", "production", "--force", "--reason", "test")


def seed(cluster: Cluster) -> None:
    """Push ``greet`` 1.0.0 and promote it to production in ``cluster``'s database."""
    config = {"database_url": f"sqlite:///{cluster.workdir / 'keel.db'}", **GATEWAY}
    (cluster.workdir / "keel.yaml").write_text(yaml.safe_dump(config))
    push(cluster, greet("1.0.0"))
    promote(cluster, "greet", "1.0.0")


@dataclass
class Registry:
    """A gateway process and a key for it, on a copy of a seeded database."""

    cluster: Cluster
    gateway: Process
    key: str

    @classmethod
    def start(cls, cluster: Cluster, seeded: Path) -> Registry:
        """The gateway reads every label at start, so it serves the seeded ones at once."""
        for db in seeded.glob("keel.db*"):
            shutil.copy(db, cluster.workdir / db.name)
        config = {"database_url": f"sqlite:///{cluster.workdir / 'keel.db'}", **GATEWAY}
        gateway, key = cluster.gateway(config)
        return cls(cluster, gateway, key)

    @property
    def url(self) -> str:
        return self.gateway.url

    def push(self, doc: dict[str, Any]) -> None:
        push(self.cluster, doc)

    def promote(self, name: str, version: str) -> None:
        promote(self.cluster, name, version)

    def stop(self) -> None:
        self.gateway.stop()

    def restart(self) -> None:
        """Start the gateway again; it reads every label at start, so a move is seen at once."""
        self.cluster.restart(self.gateway)


@dataclass
class Clock:
    """A monotonic clock the test moves by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Requests:
    """Counts the requests an ``httpx`` client sends, through its event hooks."""

    sent: list[str] = field(default_factory=list)

    def record(self, request: httpx.Request) -> None:
        self.sent.append(str(request.url))

    async def arecord(self, request: httpx.Request) -> None:
        self.record(request)

    def client(self) -> httpx.Client:
        return httpx.Client(event_hooks={"request": [self.record]})

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(event_hooks={"request": [self.arecord]})

    def __len__(self) -> int:
        return len(self.sent)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())

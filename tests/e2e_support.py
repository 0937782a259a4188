"""Real processes on loopback: `keel sim` upstreams and `keel serve` gateways."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import yaml

STARTUP_TIMEOUT_S = 15.0


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def keel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Process:
    """A keel subprocess that is ready once ``/healthz`` answers."""

    def __init__(self, args: list[str], port: int, cwd: Path, log: Path) -> None:
        self.args = args
        self.port = port
        self.cwd = cwd
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> Process:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "keel", *self.args],
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # readiness poll of another process, bounded by the deadline
        self.stop()
        raise RuntimeError(f"{self.args[0]} not ready in {STARTUP_TIMEOUT_S}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Cluster:
    """Starts processes for one test and stops every one of them afterwards."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[Process] = []
        self.clients: list[Any] = []

    def closing(self, client: C) -> C:
        """``client`` (an SDK or HTTP client), closed when the test ends.

        An SDK client left open keeps its keep-alive sockets until the
        collector finds them, and the warning that raises then fails
        whichever test happens to be running.
        """
        self.clients.append(client)
        return client

    def sim(self, name: str, port: int | None = None, **settings: Any) -> Process:
        config = self.workdir / f"sim-{name}.yaml"
        config.write_text(yaml.safe_dump(settings))
        port = port or free_port()
        process = Process(
            ["sim", "--port", str(port), "-c", str(config)],
            port,
            self.workdir,
            self.workdir / f"sim-{name}.log",
        )
        self.processes.append(process)
        return process.start()

    def gateway(self, config: dict[str, Any]) -> tuple[Process, str]:
        gateways, key = self.gateways(config, 1)
        return gateways[0], key

    def gateways(self, config: dict[str, Any], count: int) -> tuple[list[Process], str]:
        """``count`` gateway processes on one config and database, and a key of tenant e2e."""
        path = self.workdir / "keel.yaml"
        config = {"database_url": f"sqlite:///{self.workdir / 'keel.db'}", **config}
        path.write_text(yaml.safe_dump(config))
        created = keel(
            "keys",
            "create",
            "--tenant",
            "e2e",
            "-c",
            str(path),
            "--format",
            "json",
            cwd=self.workdir,
        )
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)["key"]
        started = []
        for i in range(count):
            port = free_port()
            process = Process(
                ["serve", "-c", str(path), "--port", str(port), "--log-level", "warning"],
                port,
                self.workdir,
                self.workdir / ("gateway.log" if i == 0 else f"gateway-{i}.log"),
            )
            self.processes.append(process)
            started.append(process.start())
        return started, key

    def keel(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a `keel` command against this cluster's gateway config."""
        return keel(*args, "-c", str(self.workdir / "keel.yaml"), cwd=self.workdir)

    def restart(self, process: Process) -> Process:
        """Start a stopped process again on the same port."""
        process.stop()
        return process.start()

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for process in self.processes:
            process.stop()

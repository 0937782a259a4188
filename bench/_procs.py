"""Process plumbing shared by the benchmarks: spawn, wait, measure, always clean up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Procs:
    """Children started in their own session, so a whole tree is stopped by its group id."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        log.close()
        self.started.append(proc)
        return proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Workers may outlive a master that exited first; the group id still names them.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)
        self.started.clear()


def http_ok(port: int, path: str, timeout: float = 0.5, *, any_status: bool = False) -> bool:
    """One GET on a fresh connection; True on a 2xx (on any answer with ``any_status``)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            request = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
            s.sendall(request.encode())
            head = s.recv(64)
    except OSError:
        return False
    if any_status:
        return head.startswith(b"HTTP/")
    return head[9:10] == b"2"


def wait_ready(
    proc: subprocess.Popen[bytes],
    port: int,
    path: str,
    started: float,
    limit: float,
    *,
    any_status: bool = False,
) -> float:
    """Seconds from ``started`` (spawn) to the first 2xx (or any answer) on ``path``."""
    deadline = started + limit
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before it was ready")
        if http_ok(port, path, any_status=any_status):
            return time.perf_counter() - started
        time.sleep(0.005)
    raise RuntimeError(f"not ready on :{port}{path} within {limit:g}s")


# --- /proc measurements ------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    return _stat_of(Path(f"/proc/{pid}/stat"))


def _stat_of(path: Path) -> list[str] | None:
    try:
        raw = path.read_text()
    except OSError:
        return None
    # The command name may hold spaces; everything after the last ")" is fixed.
    return raw[raw.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids`` (threads included), in seconds."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU of ``pid``'s main thread and of all its other threads, in seconds.

    In a gateway the main thread runs the event loop; the others are the
    telemetry writer and helpers, so the split shows where a cost sits.
    """
    main = rest = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            fields = _stat_of(Path(f"/proc/{pid}/task/{tid}/stat"))
            if fields is None:
                continue
            ticks = int(fields[11]) + int(fields[12])
            if int(tid) == pid:
                main += ticks
            else:
                rest += ticks
    return main / CLK_TCK, rest / CLK_TCK


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


TELEMETRY_PROCESS = "keel.api.telemetry_worker"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def workers_of(root: int) -> list[int]:
    """The processes that serve requests: the children when there are any, else the root.

    uvicorn with ``--workers N`` forks N children (plus, on some versions, a
    resource tracker); a single-worker server is the root itself. Keel's
    telemetry processes are not workers: see ``telemetry_of``.
    """
    kids = [
        p
        for p in tree(root)
        if p != root and rss_mib(p) > 30 and TELEMETRY_PROCESS not in _cmdline(p)
    ]
    return kids or [root]


def telemetry_of(worker: int) -> list[int]:
    """The telemetry process a Keel worker started (none before its first batch)."""
    return [p for p in tree(worker)[1:] if TELEMETRY_PROCESS in _cmdline(p)]


# --- load ---------------------------------------------------------------------


def run_load(
    url: str,
    *,
    key: str | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    duration: float = 5.0,
    grace: float = 5.0,
) -> dict[str, Any]:
    """Run ``_load.py`` in its own process and return its summary."""
    cmd = [PYTHON, str(BENCH / "_load.py"), "--url", url, "--duration", str(duration)]
    cmd += ["--grace", str(grace)]
    if key:
        cmd += ["--key", key]
    if rate:
        cmd += ["--rate", str(rate)]
    else:
        cmd += ["--concurrency", str(concurrency or 1)]
    done = subprocess.run(
        cmd, capture_output=True, check=False, timeout=duration + grace + 30, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary

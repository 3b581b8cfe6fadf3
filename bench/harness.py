"""What the serving benchmarks share: a real `rag serve` process on a free loopback port, its CPU and memory.

Used by bench/serve.py (cold start, /api/answer latency) and bench/soak.py (mixed routes while a
re-ingest publishes a new generation). Linux only (/proc).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, port: int, log: Path | None = None) -> tuple[subprocess.Popen, float]:
    """Start `rag serve` on ``index`` (extractive generator) and wait for /readyz 200.

    Args:
        index: the index folder, passed as ``--index`` and ``RAG_INDEX_DIR``.
        port: a free loopback port (``free_port``).
        log: where the server's stderr (its warnings and errors) goes; discarded when None.

    Returns:
        The server process and its cold start: seconds from process start to /readyz 200.
    """
    t0 = time.perf_counter()
    env = {**os.environ, "RAG_GENERATOR": "extractive", "RAG_INDEX_DIR": str(index)}
    with open(log or os.devnull, "wb") as stderr:  # the child keeps its own copy of the handle
        proc = subprocess.Popen([sys.executable, "-m", "rag", "serve", "--index", str(index), "--port", str(port)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    url = f"http://127.0.0.1:{port}/readyz"
    while time.perf_counter() - t0 < READY_TIMEOUT_S:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            sys.exit(f"rag serve exited; is the index built? (see the docstring){log_tail(log)}")
        time.sleep(0.02)
    proc.kill()
    sys.exit(f"server not ready after {READY_TIMEOUT_S:.0f} s{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 20) -> str:
    """The last lines of a log, indented under a heading; empty when there is none."""
    if log is None or not log.is_file():
        return ""
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return "".join(f"\n  | {line}" for line in tail)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc), to split server cost from client cost."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process now (VmRSS in /proc/<pid>/status), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}: is it a zombie?")

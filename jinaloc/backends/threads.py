"""How many CPU threads a backend uses by default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import JinalocError


def _physical_cores() -> int | None:
    if sys.platform == "darwin":
        for key in ("hw.perflevel0.physicalcpu", "hw.physicalcpu"):
            try:
                out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True)
                return int(out.stdout)
            except (OSError, ValueError):
                continue
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    cores, package = set(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            package = value.strip()
        elif key.strip() == "core id":
            cores.add((package, value.strip()))
    return len(cores) or None


def default_threads() -> int:
    """JINALOC_THREADS, else the physical cores not already kept busy by other processes.

    llama.cpp's and ONNX Runtime's threads wait for each other at every layer; on a 2-core
    machine with another job running, two threads measured 1.7-4.6x slower than one
    (README "Threads"), so each core the 1-minute load average says is taken is left out."""
    env = os.environ.get("JINALOC_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise JinalocError(f"JINALOC_THREADS must be a positive integer, got {env!r}")
        return int(env)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    cores = max(1, min(usable, _physical_cores() or usable))
    try:
        busy = int(os.getloadavg()[0])
    except (AttributeError, OSError):  # Windows
        busy = 0
    return max(1, min(cores, usable - busy))

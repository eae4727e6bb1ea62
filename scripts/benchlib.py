"""Shared helpers for the benchmark scripts: timing, machine description, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a fresh clone without installing
    sys.path.insert(0, str(ROOT))


def call_in_tree(tree: Path, module: str, function: str, *args):
    """`module.function(*args)` (a script module here; arguments and result as JSON) in a
    fresh process that imports jinaloc from the source tree `tree`: how the benchmarks
    measure an older layout beside this one."""
    code = (
        "import sys, json;"
        f" sys.path[:0] = [{str(tree)!r}, {str(Path(__file__).parent)!r}];"
        " import jinaloc;"  # from `tree`, before this module can put its own checkout first
        f" from {module} import {function} as call;"
        " print(json.dumps(call(*json.loads(sys.stdin.read()))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(args),
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"{module}.{function} in {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def tree_of(rev: str, into: Path) -> Path:
    """The package at a git revision, unpacked to import from."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "jinaloc", "models.toml"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def bench_models_dir() -> Path:
    """Where make_bench_models.py writes the full-size random-weight models: outside the repo,
    beside it unless $JINALOC_BENCH_MODELS says otherwise."""
    default = ROOT.parent / "bench-models"
    return Path(os.environ.get("JINALOC_BENCH_MODELS") or default).expanduser()


def fixtures_dir() -> Path | None:
    """The tiny test fixtures (used by --quick runs), or None."""
    for c in (os.environ.get("JINALOC_FIXTURES"), ROOT / "tests" / "fixtures"):
        if c and (Path(c) / "tiny-v5-nano" / "config.json").is_file():
            return Path(c)
    return None


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smoke run of seconds (tiny sizes)")
    p.add_argument("--json", type=Path, help="write the results here")
    return p


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1, budget: float = 0) -> list:
    """Wall-clock seconds of `repeat` calls after `warmup` calls; stops early past `budget` s."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if budget and time.perf_counter() - start > budget and len(times) >= 1:
            break
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def machine() -> dict:
    """A short description of the CPU, memory and Python this run used."""
    info = {
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],  # other work on the machine
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in out.splitlines())
        )
        info["cpu"] = fields.get("Model name")
        info["l3"] = fields.get("L3 cache")
        flags = fields.get("Flags", "").split()
        simd = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile")
        info["simd"] = [f for f in simd if f in flags]
    except (OSError, subprocess.CalledProcessError):
        info["cpu"] = platform.processor()
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        info["mem_gb"] = round(kb / 2**20, 1)
    except OSError:
        pass
    return info


def _jsonable(x):
    if isinstance(x, Path):
        return str(x)
    try:
        return x.item()  # numpy scalars
    except AttributeError:
        return str(x)


def write_json(path: Path | None, results: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=_jsonable) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of `rows` (dicts) with the given columns."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)

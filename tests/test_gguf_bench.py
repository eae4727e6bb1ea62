"""scripts/bench_gguf.py on the tiny fixture: the run and the profile finish and add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES, ROOT

pytest.importorskip("llama_cpp")
pytest.importorskip("onnxruntime")  # the int8 roof
pytestmark = pytest.mark.slow

MODELS = FIXTURES / "tiny-v5-small" / "gguf"  # v5-small-retrieval-Q8_0.gguf, as `make` names


def bench(*args: str) -> str:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_gguf.py"), *args]
    env = {**os.environ, "JINALOC_FIXTURES": str(FIXTURES)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_run_times_before_and_after_interleaved(tmp_path):
    out = tmp_path / "run.json"
    common = ["--models", str(MODELS), "--families", "small", "--threads", "1"]
    bench("run", *common, "--rounds", "2", "--workloads", "1x20", "32x128", "--flash",
          "--before", str(ROOT), "--json", str(out))  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert {r["variant"] for r in rows} == {"before-t1", "after-t1", "flash-t1"}
    for r in rows:
        assert r["rounds"] == 2 and r["ms"] > 0 and 0 < r["in_decode"] <= 1
        assert r["cos_vs_first"] > (0.999 if r["variant"] == "flash-t1" else 0.99999)
        if r["variant"] != "before-t1":
            assert r["speedup"] > 0 and r["cpu_speedup"] > 0


def test_profile_splits_the_decode_into_parts():
    out = bench("profile", "--models", str(MODELS), "--families", "small", "--workloads", "8x128")
    parts = [line.split("|")[3].strip() for line in out.splitlines() if "| small |" in line]
    assert "projections (Q8_0 GEMM)" in parts and "attention" in parts
    shares = [float(line.split("|")[5]) for line in out.splitlines() if "| small |" in line]
    assert 0.5 < sum(shares) <= 1.01  # the parts cover the decode

"""The benchmark scripts' --quick smoke runs: they finish and write sane JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES, ROOT

pytestmark = pytest.mark.slow


def run_quick(script: str, tmp_path, *extra: str) -> dict:
    out = tmp_path / f"{script}.json"
    cmd = [sys.executable, str(ROOT / "scripts" / script), "--quick", "--json", str(out), *extra]
    env = {**os.environ, "JINALOC_FIXTURES": str(FIXTURES)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["machine"]["cpus"] >= 1
    return data


def positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and v > 0 for v in values)


def test_bench_embed_quick(tmp_path):
    pytest.importorskip("llama_cpp")  # its quick run measures GGUF (the gguf extra)
    data = run_quick("bench_embed.py", tmp_path)
    assert positive(data["roof_gflops"]["peak"], data["roof_gflops"]["numpy_fp32"]["median"])
    rows = data["results"]
    assert {r["family"] for r in rows} == {"nano", "small"}
    assert {r["workload"] for r in rows} == {"short", "medium", "long"}
    assert {r["mode"] for r in rows} == {"single", "batched"}
    runtimes = {r["runtime"] for r in rows}
    assert runtimes & {"gguf-F32", "gguf-Q8_0", "mlx-fp32"}, data["skipped"]
    for r in rows:
        assert positive(r["tok_per_s"], r["ms_per_call"], r["rounds"], r["gflop_per_token"])
        assert r["texts"] >= 1 and r["tokens_per_text"] > 1
        assert r["roof_fraction"] > 0
    if "pytorch-fp32" in runtimes:  # the bench extra is installed
        assert all(positive(r["vs_pytorch"]) for r in rows)
        assert data["targets"] and all("met" in t for t in data["targets"])
        # Every runtime computes the same model: vectors agree with PyTorch's.
        assert data["cosine_vs_pytorch"]
        assert all(c["min_cos"] > 0.95 for c in data["cosine_vs_pytorch"])


def test_bench_index_quick(tmp_path):
    data = run_quick("bench_index.py", tmp_path)
    (row,) = data["results"]
    assert row["files"] == data["args"]["files"]
    assert row["chunks"] >= row["files"]
    assert positive(row["tokens"], row["index_s"], row["load_s"], row["embed_s"])
    assert positive(row["embed_tok_per_s"])
    assert isinstance(row["overhead"], float)
    assert data["targets"][0]["target"].startswith(row["family"])


def test_bench_search_quick(tmp_path):
    data = run_quick("bench_search.py", tmp_path)
    (row,) = data["results"]
    for key in ("exact", "exact_warm", "bits", "two_stage", "numpy", "numpy_load"):
        assert positive(row[f"{key}_p50_ms"], row[f"{key}_p95_ms"])
        assert row[f"{key}_p95_ms"] >= row[f"{key}_p50_ms"]
    assert row["bytes_per_chunk"] > row["float_bytes_per_chunk"] > 0
    assert 0.8 <= row["recall_two_stage"] <= 1
    assert row["recall_exact"] >= 0.99  # exact on float16-kept vectors: near-ties may swap
    assert 0 <= row["recall_bits"] <= row["recall_two_stage"]
    assert positive(row["write_chunks_per_s"], row["redim_32_s"], row["redim_64_s"])


def test_bench_lexical_quick(tmp_path):
    data = run_quick("bench_lexical.py", tmp_path)
    rows = {r["variant"]: r for r in data["cjk"]}
    assert {"unicode61", "bigram", "trigram"} <= set(rows)
    for L in (1, 2, 3, 4):
        assert rows["bigram"][f"recall_{L}"] == 1.0
        assert rows["bigram"][f"precision_{L}"] == 1.0
    assert rows["unicode61"]["recall_2"] < 0.5  # the baseline misses CJK words
    assert all(positive(r["bytes_per_chunk"], r["p50_ms_2"]) for r in rows.values())
    ids = [r for r in data["ids"] if r["queries"] == "id"]
    assert {r["operator"] for r in ids} == {"OR", "AND"}
    assert all(r["recall@10"] > 0.9 for r in ids)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_bench_watch_quick(tmp_path):
    data = run_quick("bench_watch.py", tmp_path)
    assert data["exit_codes"] == {"100": 0, "500": 0}
    for row in data["results"]:
        assert row["max s"] >= row["median s"] >= row["debounce ms"] / 1000
        assert positive(row["RSS MB"])
    assert all(len(v) == data["rounds"] for v in data["latencies"].values())
    assert data["plan"]["notes"] == 200
    assert positive(data["plan"]["whole root ms"], data["plan"]["one touched note ms"])


def test_bench_rerank_quick(tmp_path):
    pytest.importorskip("llama_cpp")
    data = run_quick("bench_rerank.py", tmp_path)
    rows = data["results"]
    assert {(r["quant"], r["threads"]) for r in rows} == {
        (q, t) for q in ("F32", "Q8_0") for t in (1, 2)
    }
    assert set(data["modes"].values()) == {"rank"}
    for r in rows:
        assert positive(r["ms_per_candidate"], r["cpu_ms_per_candidate"], r["rounds"])
        assert r["fit_in_2s"] >= 1
    variants = {v["variant"] for v in data["variants"]}
    assert variants == {"pack 1", "pack 256", "no-shared-prefix", "logits"}


def test_bench_serve_quick(tmp_path):
    pytest.importorskip("llama_cpp")  # serves the GGUF fixture (the gguf extra)
    model = str(FIXTURES / "tiny-v5-nano")
    data = run_quick("bench_serve.py", tmp_path, "--model", model, "--quant", "F32")
    rows = {r["run"]: r for r in data["rows"]}
    assert set(rows) == {"cold", "warm", "--help", "python -c pass", "http"}
    assert all(positive(r["median_ms"], r["min_ms"]) for r in rows.values())
    warm = data["imports"]["warm"]
    assert positive(data["speedup_cold_over_warm"], warm["total_ms"])
    assert "jinaloc" in warm["top_ms"]
    # The warm search ran on the server: this process loaded no numpy, no pydantic.
    assert not warm["numpy_loaded"] and not warm["pydantic_loaded"]


def test_bench_search_rerank_quick(tmp_path):
    data = run_quick("bench_search_rerank.py", tmp_path)
    rows = {r["search"]: r for r in data["rows"]}
    assert set(rows) == {"plain", "rerank 2", "rerank 4"}
    assert all(positive(r["best s"]) for r in rows.values())


def test_bench_kept_vectors_quick(tmp_path):
    data = run_quick("bench_kept_vectors.py", tmp_path)
    rows = {r["kept"]: r for r in data["results"]}
    assert rows["float32"]["recall@32"] == 1 and rows["float32"]["max_score_error@64"] == 0
    assert rows["float16"]["bytes_per_chunk"] == 2 * 64 and rows["int8"]["bytes_per_chunk"] == 68
    assert rows["int8"]["max_score_error@64"] > rows["float16"]["max_score_error@64"] > 0


def test_bench_cold_quick(tmp_path):
    model = str(FIXTURES / "tiny-v5-nano")
    data = run_quick("bench_cold.py", tmp_path, "--model", model, "--quant", "F32")
    runs = {r["run"] for r in data["whole_process"]}
    assert runs == {"search", "lexical search", "--help", "search --help", "probed search"}
    (phases,) = data["phases_median_ms"]
    assert phases["tree"] == "after" and data["hits"] >= 1
    assert positive(*(phases[p] for p in ("startup", "model_load", "query_embed", "search")))
    assert phases["total"] >= phases["startup"] + phases["search"]
    imports = data["imports_of_search_ms"]["after"]
    assert positive(imports["total_ms"], imports["numpy"], imports["typer"])

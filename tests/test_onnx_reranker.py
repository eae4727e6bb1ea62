"""The Qwen3-Reranker on ONNX Runtime (jinaloc's own graph + the yes/no head) on the tiny
reranker: scores equal the model card's recipe (golden.json), the ranking is the GGUF
reranker's, and it is what `rerank --cross` runs on a default x86 install (no llama.cpp)."""

from __future__ import annotations

import builtins
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from reranker_helpers import (  # noqa: E402
    BIG,
    F32_TOL,
    FIXTURE,
    GOLDEN,
    RANK_F32,
    groups,
    scores_vs_golden,
)

from jinaloc.cli import app  # noqa: E402
from jinaloc.errors import JinalocError  # noqa: E402
from jinaloc.load import default_backend  # noqa: E402
from jinaloc.reranker import load_reranker, reranker_backend, resolve_reranker  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.test_cli_models import add_repo, jinaloc  # noqa: E402

# int8: graph.int8_matmul, as for the embedding models (weights per column, activations per
# token row). This fixture's random weights (std 0.25) make a chaotic network that amplifies
# rounding: measured max abs error 0.052, mean 0.011 (per-tensor activations gave 0.30 and
# 0.085; llama.cpp's Q8_0, one activation scale per 32 values, 0.031: tests/test_reranker.py).
INT8_TOL, INT8_MEAN_TOL = 0.08, 0.02
runner = CliRunner()
# Where ONNX Runtime is the default backend (x86_64 Linux, Windows), a registry reranker runs
# on it; elsewhere on llama.cpp.
onnx_default = pytest.mark.skipif(default_backend() != "onnx", reason="ONNX is not the default")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The module's ONNX cache (conftest's own dirs are per test, set up after this)."""
    path = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JINALOC_CACHE_DIR", str(path))
        yield path


def loaded(quant: str, **kwargs):
    r = load_reranker(str(FIXTURE), quant=quant, threads=1, **kwargs)
    yield r
    r.close()


@pytest.fixture(scope="module")
def fp32(cache):
    yield from loaded("fp32", doc_tokens=BIG)


@pytest.fixture(scope="module")
def int8(cache):
    yield from loaded("int8", doc_tokens=BIG)


def test_fp32_scores_equal_the_card_recipe_and_rank_the_same(fp32):
    assert fp32.backend.mode == "onnx" and fp32.backend.quant == "fp32"
    got, want = scores_vs_golden(fp32)
    worst = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
    print(f"ONNX fp32 vs golden: max abs diff {worst:.2e} over {len(GOLDEN['cases'])} pairs")
    assert worst < F32_TOL
    for g, w in zip(got, want, strict=True):
        assert list(np.argsort(-g, kind="stable")) == list(np.argsort(-w, kind="stable"))


def test_int8_scores_within_tolerance_and_mostly_ordered_as_the_card(int8):
    assert int8.backend.quant == "qint8"
    got, want = scores_vs_golden(int8)
    diff = np.concatenate([np.abs(g - w) for g, w in zip(got, want, strict=True)])
    print(f"ONNX int8 vs golden: max abs diff {diff.max():.4f}, mean {diff.mean():.4f}")
    assert diff.max() < INT8_TOL and diff.mean() < INT8_MEAN_TOL
    # Pairs of documents whose golden scores differ by more than 0.4 keep their order; of those
    # more than 0.2 apart, most do (measured 44 of 52).
    same, pairs = 0, 0
    for g, w in zip(got, want, strict=True):
        for i, j in combinations(range(len(w)), 2):
            if abs(w[i] - w[j]) > 0.4:
                assert (g[i] > g[j]) == (w[i] > w[j])
            if abs(w[i] - w[j]) > 0.2:
                pairs += 1
                same += (g[i] > g[j]) == (w[i] > w[j])
    assert pairs > 40 and same / pairs >= 0.8


def test_the_onnx_and_gguf_rerankers_give_the_same_scores_and_ranking(fp32):
    pytest.importorskip("llama_cpp")
    gguf = load_reranker(str(RANK_F32), threads=1, doc_tokens=BIG)
    try:
        assert gguf.backend.mode == "rank"
        for inst, query, cases in groups():
            docs = [c["document"] for c in cases]
            a, b = fp32.score(query, docs, inst), gguf.score(query, docs, inst)
            np.testing.assert_allclose(a, b, atol=F32_TOL)
            assert list(np.argsort(-a, kind="stable")) == list(np.argsort(-b, kind="stable"))
    finally:
        gguf.close()


def test_batches_and_padding_do_not_change_scores(fp32):
    inst, query, cases = groups()[0]
    docs = [c["document"] for c in cases]
    together = fp32.score(query, docs, inst)
    alone = np.array([fp32.score(query, [d], inst)[0] for d in docs])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    backend = fp32.backend
    old = backend.pack_tokens
    backend.pack_tokens = 1  # one pair per forward pass
    try:
        np.testing.assert_allclose(
            backend.score_tokens(fp32.prompt_ids(query, docs, inst)), together, atol=1e-6
        )
    finally:
        backend.pack_tokens = old
    assert backend._batches([5, 1000, 6, 7]) == [[0, 2, 3], [1]]  # within PACK_TOKENS


def test_trimming_empty_input_and_bad_sequences(fp32):
    r = load_reranker(str(FIXTURE), quant="fp32", threads=1, doc_tokens=8)
    try:
        long_doc = max(GOLDEN["cases"], key=lambda c: len(c["document"]))["document"]
        trimmed = r.trim(long_doc)
        assert long_doc.startswith(trimmed) and len(trimmed) < len(long_doc)
        assert len(r.backend.tokenize(trimmed)) <= 8
        accented = "Zürich café: crème brûlée"
        for n in range(1, len(r.backend.tokenize(accented))):
            cut = r.backend.detokenize(r.backend.tokenize(accented)[:n])
            assert accented.startswith(cut)  # a character cut in two is dropped, not garbled
    finally:
        r.close()
    assert fp32.score("q", []).shape == (0,)
    s = fp32.score("q", ["", ""])
    assert s.shape == (2,) and 0 < s[0] < 1 and s[0] == pytest.approx(s[1])
    with pytest.raises(JinalocError, match="empty token sequence"):
        fp32.backend.score_tokens([[1, 2], []])
    with pytest.raises(JinalocError, match="exceeds 512"):
        fp32.backend.score_tokens([[1] * 513])
    with pytest.raises(JinalocError, match="outside the vocabulary"):
        fp32.backend.score_tokens([[1, 10_000]])


def test_the_built_model_is_cached_per_quant(fp32, int8, cache, monkeypatch):
    monkeypatch.setenv("JINALOC_CACHE_DIR", str(cache))
    assert fp32.backend.model_file != int8.backend.model_file
    assert fp32.backend.model_file.is_relative_to(cache)
    again = load_reranker(str(FIXTURE), quant="fp32", threads=1)
    try:
        assert again.backend.model_file == fp32.backend.model_file
    finally:
        again.close()


def test_which_backend_reranks():
    folder, _ = resolve_reranker(str(FIXTURE))
    gguf_file, _ = resolve_reranker(str(RANK_F32))
    assert reranker_backend(folder, "auto", None) == "onnx"
    assert reranker_backend(gguf_file, "auto", None) == "gguf"
    assert reranker_backend(folder, "gguf", None) == "gguf"
    with pytest.raises(JinalocError, match="no mlx reranker"):
        reranker_backend(folder, "mlx", None)
    with pytest.raises(JinalocError, match="is a GGUF file.*--backend gguf"):
        load_reranker(str(RANK_F32), backend="onnx")


def _without_llama_cpp(monkeypatch):
    """Imports of llama_cpp fail, as on a default x86 install."""
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_asking_for_gguf_without_llama_cpp_names_the_extra(monkeypatch):
    _without_llama_cpp(monkeypatch)
    with pytest.raises(JinalocError, match=r"pip install 'jinaloc\[gguf\]'"):
        load_reranker(str(RANK_F32))
    with pytest.raises(JinalocError, match=r"pip install 'jinaloc\[gguf\]'"):
        load_reranker(str(FIXTURE), backend="gguf")
    r = runner.invoke(
        app,
        ["rerank", "--cross", "--reranker", str(FIXTURE), "--backend", "gguf", "router"],
        input="a\nb\n",
    )
    assert r.exit_code == 2
    assert "pip install 'jinaloc[gguf]'" in r.stderr and "Traceback" not in r.output
    # The default (ONNX) runs all the same.
    r = runner.invoke(
        app, ["rerank", "--cross", "--reranker", str(FIXTURE), "--scores", "router"], input="a\nb\n"
    )
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2


@onnx_default
def test_rerank_cross_with_the_registry_reranker_runs_on_onnx_from_its_safetensors(tmp_path):
    """The packaged default reranker, its safetensors in the HF cache, offline: what a user
    of a default x86 install gets after `jinaloc models pull qwen3-reranker-0.6b`."""
    cache = tmp_path / "hub"
    files = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    add_repo(cache, "Qwen/Qwen3-Reranker-0.6B", {f: FIXTURE / f for f in files})
    inst, query, cases = groups()[0]
    docs = [c["document"] for c in cases if c["document"]]
    text = "".join(f"{d}\n" for d in docs)
    r = jinaloc("rerank", "--cross", query, "--json", "--quant", "fp32", "--instruction", inst,
                "--doc-tokens", BIG, cache=cache, tmp_path=tmp_path, input=text)  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = {row["text"]: row["score"] for row in json.loads(r.stdout)}
    want = {c["document"]: c["score"] for c in cases if c["document"]}
    assert set(got) == set(want)
    for doc, score in want.items():
        assert got[doc] == pytest.approx(score, abs=F32_TOL)
    r = jinaloc("models", "path", "qwen3-reranker-0.6b", cache=cache, tmp_path=tmp_path)
    assert r.returncode == 0 and (Path(r.stdout.strip()) / "model.safetensors").is_file()


@onnx_default
def test_missing_reranker_safetensors_offline_says_what_to_pull(tmp_path):
    r = jinaloc("rerank", "--cross", "q", cache=tmp_path / "hub", tmp_path=tmp_path, input="a\n")
    assert r.returncode == 2
    assert "jinaloc models pull qwen3-reranker-0.6b --format safetensors" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_serve_reranks_with_the_onnx_cross_encoder(tmp_path, cache):
    """`jinaloc serve` on the ONNX backend, its /v1/rerank with a registry cross-encoder whose
    files are the reranker's safetensors: no llama.cpp anywhere."""
    for module in ("uvicorn", "starlette"):  # the serve extra
        pytest.importorskip(module)
    from server_helpers import ServeProcess, call

    config = tmp_path / "config"
    config.mkdir()
    (config / "models.toml").write_text(
        f'[models.tiny-rr]\npath = {json.dumps(str(FIXTURE))}\nkind = "reranker"\n'
    )
    nano = ROOT / "tests" / "fixtures" / "tiny-v5-nano"
    server = ServeProcess(tmp_path / "state", "--model", str(nano), "--backend", "onnx")
    try:
        docs = ["cats purr", "stock prices", "a kitten sleeps", "tax forms"]
        status, body = call(
            server.url, "/v1/rerank", {"model": "tiny-rr", "query": "cats", "documents": docs}
        )
    finally:
        server.stop()
    assert status == 200 and body["model"] == "tiny-rr", body
    reranker = load_reranker(str(FIXTURE), threads=1)  # the same default quant (int8)
    try:
        assert reranker.backend.mode == "onnx"
        want = reranker.score("cats", docs)
    finally:
        reranker.close()
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert [r["index"] for r in body["results"]] == sorted(range(4), key=lambda i: -want[i])
    assert all(abs(got[i] - want[i]) < 1e-5 for i in range(4))


def test_search_rerank_on_the_onnx_backend(tmp_path, cache, monkeypatch):
    from index_helpers import make_notes

    monkeypatch.setenv("JINALOC_CACHE_DIR", str(cache))
    make_notes(tmp_path / "notes", 6, paragraphs=2, words=10)
    nano = ROOT / "tests" / "fixtures" / "tiny-v5-nano"
    db = tmp_path / "i.db"
    args = ["--db", str(db), "--model", str(nano), "--backend", "onnx", "--no-server"]
    r = runner.invoke(app, ["index", str(tmp_path / "notes"), *args, "-q"])
    assert r.exit_code == 0, r.stderr
    search = ["search", "notes", *args, "--json", "-k", "3", "--rerank"]
    r = runner.invoke(app, [*search, "--reranker", str(FIXTURE)])
    assert r.exit_code == 0, r.stderr
    hits = json.loads(r.stdout)
    assert hits and all(0 < h["rerank"]["score"] < 1 for h in hits)
    scores = [h["rerank"]["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_models_add_registers_a_reranker_folder_as_a_reranker(cache, monkeypatch):
    monkeypatch.setenv("JINALOC_CACHE_DIR", str(cache))
    r = runner.invoke(app, ["models", "add", str(FIXTURE), "--name", "my-rr"])
    assert r.exit_code == 0, r.stderr
    assert "added my-rr (reranker)" in r.stderr
    r = runner.invoke(
        app,
        ["rerank", "--cross", "--reranker", "my-rr", "--quant", "fp32", "--scores", "router"],
        input="reset the router\nboil the pasta\n",
    )
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2


def test_auto_off_onnx_platforms_is_llama_cpp_or_else_onnx(monkeypatch):
    """Where GGUF or MLX is the default (ARM, Apple Silicon), a registry reranker runs on
    llama.cpp when it is installed, else on ONNX Runtime when that is."""
    import importlib.util

    import jinaloc.load

    spec, _ = resolve_reranker("qwen3-reranker-0.6b")
    monkeypatch.setattr(jinaloc.load, "default_backend", lambda quant=None: "mlx")
    real = importlib.util.find_spec
    for have_llama, want in ((False, "onnx"), (True, "gguf")):
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a, h=have_llama: (
                (object() if h else None) if name == "llama_cpp" else real(name, *a)
            ),
        )
        assert reranker_backend(spec, "auto", None) == want

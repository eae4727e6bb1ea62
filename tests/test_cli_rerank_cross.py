"""`rerank --cross` and the reranker in `jinaloc models`, end to end on the tiny reranker.

Every score the CLI prints must equal the Reranker API's for the same pairs (which
tests/test_reranker.py checks against the model card's recipe)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("llama_cpp")

from jinaloc.cli import app  # noqa: E402
from jinaloc.reranker import load_reranker  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.test_cli_models import add_repo, jinaloc  # noqa: E402

GGUF = ROOT / "tests" / "fixtures" / "tiny-qwen3-reranker" / "gguf"
F32, Q8 = GGUF / "tiny-qwen3-reranker-F32.gguf", GGUF / "tiny-qwen3-reranker-Q8_0.gguf"
TEXTS = [
    "Unplug the router for thirty seconds, then hold the reset button.",
    "Boil the pasta, fry garlic in olive oil.",
    "Cherry blossoms in Kyoto peak in early April.",
    "Meeting notes: budget review moved to Thursday.",
    "yes or no? The answer can only be one word.",
]
QUERY = "how do I reset my router"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    # On a loaded 2-core machine llama.cpp's spinning threads make tiny models 15x slower.
    monkeypatch.setenv("JINALOC_THREADS", "1")


@pytest.fixture(scope="module")
def api():
    r = load_reranker(str(F32), threads=1)
    yield r
    r.close()


def lines(texts) -> str:
    return "".join(f"{t}\n" for t in texts)


def cross(*args, input=None, reranker=F32):
    return runner.invoke(
        app, ["rerank", "--cross", "--reranker", str(reranker), *map(str, args)], input=input
    )


def test_cross_orders_by_the_rerankers_scores_and_keeps_grep_prefixes(api):
    s = api.score(QUERY, TEXTS)
    order = np.argsort(-s, kind="stable")
    grep = [f"notes/n{i}.md:{i + 1}:{t}" for i, t in enumerate(TEXTS)]
    r = cross(QUERY, "--scores", input=lines(grep))
    assert r.exit_code == 0, r.stderr
    out = [line.split("\t") for line in r.stdout.splitlines()]
    assert [o[1] for o in out] == [grep[i] for i in order]
    np.testing.assert_allclose([float(o[0]) for o in out], s[order], atol=1e-4)
    r = cross(QUERY, "-k", "2", input=lines(TEXTS))
    assert r.stdout.splitlines() == [TEXTS[i] for i in order[:2]]


def test_cross_instruction_json_and_min_score(api):
    inst = "Find recipes"
    s = api.score(QUERY, TEXTS, inst)
    assert np.abs(s - api.score(QUERY, TEXTS)).max() > 1e-3  # the instruction matters
    r = cross(QUERY, "--instruction", inst, "--json", input=lines(TEXTS))
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["rank"] for row in rows] == list(range(1, len(TEXTS) + 1))
    np.testing.assert_allclose([row["score"] for row in rows], np.sort(s)[::-1], atol=1e-5)
    assert [row["text"] for row in rows] == [TEXTS[i] for i in np.argsort(-s, kind="stable")]
    cut = float(np.median(s))
    r = cross(QUERY, "--instruction", inst, "--min-score", cut, input=lines(TEXTS))
    assert len(r.stdout.splitlines()) == int((s >= cut).sum())
    r = cross(QUERY, "--min-score", "1.01", input=lines(TEXTS))
    assert (r.exit_code, r.stdout) == (1, "")


def test_cross_doc_tokens_cuts_each_line(api):
    short = load_reranker(str(F32), threads=1, doc_tokens=4)
    try:
        s = short.score(QUERY, TEXTS)
    finally:
        short.close()
    assert np.abs(s - api.score(QUERY, TEXTS)).max() > 1e-3
    r = cross(QUERY, "--doc-tokens", "4", "--json", input=lines(TEXTS))
    assert r.exit_code == 0, r.stderr
    np.testing.assert_allclose([row["score"] for row in json.loads(r.stdout)], np.sort(s)[::-1],
                               atol=1e-5)  # fmt: skip


def test_cross_reads_files(tmp_path, api):
    files = []
    for i, text in enumerate(TEXTS[:3]):
        f = tmp_path / f"n{i}.md"
        f.write_text(text + "\n")
        files.append(f)
    r = cross(QUERY, "--read-files", "--jsonl", input=lines(files))
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    s = api.score(QUERY, [f.read_text() for f in files])
    assert [row["path"] for row in rows] == [str(files[i]) for i in np.argsort(-s, kind="stable")]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["rerank", "q", "--reranker", str(F32)],
            "--reranker, --instruction and --doc-tokens need --cross",
        ),
        (
            ["rerank", "q", "--instruction", "x"],
            "--reranker, --instruction and --doc-tokens need --cross",
        ),
        (["rerank", "q", "--cross", "--model", "v5-nano"], "with --cross use --reranker"),
        (["rerank", "q", "--cross", "--reranker", "nope"], "unknown reranker 'nope'"),
        (["rerank", "q", "--cross", "--reranker", "x/missing.gguf"], "reranker GGUF not found"),
        (["rerank", "q", "--cross", "--reranker", "v5-small"], "is an embedding model"),
    ],
)
def test_cross_errors_are_one_line(args, message):
    r = runner.invoke(app, args, input="a\n")
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert message in r.stderr and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1


# --- the registry reranker, from a Hugging Face cache laid out by hand ----------------------

REPO, FILE = "ggml-org/Qwen3-Reranker-0.6B-Q8_0-GGUF", "qwen3-reranker-0.6b-q8_0.gguf"


@pytest.fixture
def hf_cache(tmp_path):
    cache = tmp_path / "hub"
    add_repo(cache, REPO, {FILE: Q8})  # the tiny Q8_0 under the registry's repo and name
    return cache


def test_models_list_info_path_show_the_reranker(hf_cache, tmp_path):
    empty = tmp_path / "empty"
    r = jinaloc("models", "list", "--json", cache=empty, tmp_path=tmp_path)
    models = {m["name"]: m for m in json.loads(r.stdout)}
    rr = models["qwen3-reranker-0.6b"]
    assert (rr["kind"], rr["default"], rr["license"]) == ("reranker", True, "Apache-2.0")
    assert rr["gguf_repos"] == {"rerank": REPO} and rr["downloaded"]["gguf"] == {}
    assert models["v5-nano"]["kind"] == "embedding" and models["v5-nano"]["default"]

    r = jinaloc("models", "list", "--json", cache=hf_cache, tmp_path=tmp_path)
    rr = {m["name"]: m for m in json.loads(r.stdout)}["qwen3-reranker-0.6b"]
    assert rr["downloaded"]["gguf"] == {"rerank": ["Q8_0"]}
    r = jinaloc("models", "list", cache=hf_cache, tmp_path=tmp_path)
    row = next(line for line in r.stdout.splitlines() if line.startswith("qwen3-reranker"))
    assert row.split("\t")[:5] == [
        "qwen3-reranker-0.6b (default)", "qwen3", "reranker", "32768", "gguf Q8_0"
    ]  # fmt: skip
    r = jinaloc("models", "path", "qwen3-reranker-0.6b", "--format", "gguf", cache=hf_cache,
                tmp_path=tmp_path)  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip().endswith(FILE)
    r = jinaloc(
        "models", "info", "qwen3-reranker-0.6b", "--json", cache=hf_cache, tmp_path=tmp_path
    )
    assert json.loads(r.stdout)["max_tokens"] == 32768


def test_cross_with_the_registry_reranker_offline_from_the_cache(hf_cache, tmp_path):
    api = load_reranker(str(Q8), threads=1)
    try:
        s = api.score(QUERY, TEXTS)
    finally:
        api.close()
    # No --reranker: the registry's default reranker, its GGUF found in the cache.
    r = jinaloc("rerank", "--cross", QUERY, "--scores", "--backend", "gguf", cache=hf_cache,
                tmp_path=tmp_path, input=lines(TEXTS))  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = [float(line.split("\t")[0]) for line in r.stdout.splitlines()]
    np.testing.assert_allclose(got, np.sort(s)[::-1], atol=1e-4)  # printed with 4 decimals


def test_offline_pull_and_missing_reranker_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    r = jinaloc("models", "pull", "qwen3-reranker-0.6b", cache=empty, tmp_path=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: cannot download in offline mode (unset HF_HUB_OFFLINE / --offline)"
    ]
    r = jinaloc("rerank", "--cross", "q", "--backend", "gguf", cache=empty, tmp_path=tmp_path,
                input="a\n")  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: qwen3-reranker-0.6b (gguf Q8_0) is not downloaded and offline mode is on: run "
        "`jinaloc models pull qwen3-reranker-0.6b --format gguf --quant Q8_0` while online"
    ]
    r = jinaloc("models", "pull", "qwen3-reranker-0.6b", "--task", "retrieval", cache=empty,
                tmp_path=tmp_path, offline=False)  # fmt: skip
    assert r.returncode == 2 and "is a reranker: it has no tasks" in r.stderr

"""`search --rerank`: the first stage's candidates reordered by the tiny Qwen3 reranker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import model_dir
from index_helpers import have_gguf, make_notes
from typer.testing import CliRunner

from jinaloc.chunking import embed_text
from jinaloc.cli import app

pytestmark = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")

MODEL = ["--model", str(model_dir("nano")), "--backend", "gguf", "--quant", "F32"]
RERANKER = Path(__file__).parent / "fixtures/tiny-qwen3-reranker/gguf/tiny-qwen3-reranker-F32.gguf"


def cli(*args, ok=(0,)):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code in ok, (r.exit_code, r.stdout, r.stderr)
    return r


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rerank")
    make_notes(tmp / "notes", 20, paragraphs=3, words=40)
    path = tmp / "index.db"
    cli("index", tmp / "notes", "--db", path, "-q", "--chunk-tokens", "96", *MODEL)
    return path


def search(db, *args):
    r = cli("search", "tomato basil garlic", "--db", db, "--json", *args, *MODEL)
    return json.loads(r.stdout)


def test_rerank_reorders_the_first_stage_by_the_cross_encoder(db):
    from jinaloc.reranker import load_reranker

    top = 8
    first = search(db, "--all-chunks", "-k", str(top))
    rows = search(db, "--rerank", "--reranker", RERANKER, "--rerank-top", str(top), "-k", "20",
                  "--all-chunks")  # fmt: skip
    assert len(rows) == top
    # Every candidate, scored exactly as the reranker scores title + heading + text.
    reranker = load_reranker(str(RERANKER))
    try:
        texts = [embed_text(r["title"], r["heading"].split(" > "), r["text"]) for r in first]
        want = reranker.score("tomato basil garlic", texts)
    finally:
        reranker.close()
    by_place = {(r["path"], r["start_line"]): r for r in rows}
    for n, (r, score) in enumerate(zip(first, want, strict=True), 1):
        got = by_place[r["path"], r["start_line"]]
        assert got["first_stage"]["rank"] == n
        assert got["rerank"]["score"] == pytest.approx(float(score), abs=1e-5)
        assert got["score"] == got["rerank"]["score"]
    assert [r["rerank"]["rank"] for r in rows] == list(range(1, top + 1))
    scores = [r["rerank"]["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_rerank_keeps_the_best_chunk_per_file_and_plain_search_is_unchanged(db):
    rows = search(db, "--rerank", "--reranker", RERANKER, "--rerank-top", "12", "-k", "5")
    assert len({r["path"] for r in rows}) == len(rows) <= 5
    plain = search(db, "-k", "5")
    assert all("rerank" not in r and "first_stage" not in r for r in plain)
    text = cli("search", "tomato", "--db", db, "--rerank", "--reranker", RERANKER, "--explain",
               "-k", "2", *MODEL).stdout  # fmt: skip
    assert "→ rerank #1" in text and "→ hybrid #" in text


def test_rerank_returns_k_files_when_the_best_chunks_are_in_fewer(db):
    rows = search(db, "--rerank", "--reranker", RERANKER, "-k", "6")
    assert len(rows) == len({r["path"] for r in rows}) == 6


def test_rerank_options_need_rerank(db):
    r = cli("search", "x", "--db", db, "--reranker", RERANKER, *MODEL, ok=(2,))
    assert "go with --rerank" in r.stderr


def test_eval_measures_hybrid_with_the_reranker(db):
    r = cli("eval", "--db", db, "--json", "--rerank", "--reranker", RERANKER, "--sample", "5",
            *MODEL)  # fmt: skip
    rows = {row["name"]: row for row in json.loads(r.stdout)["rows"]}
    assert "hybrid+rerank" in rows and 0 <= rows["hybrid+rerank"]["recall"] <= 1

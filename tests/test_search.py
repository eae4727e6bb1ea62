"""Two-stage search against the exact scan, filters, grouping, similar files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from index_helpers import FakeEmbedder, make_notes

from jinaloc.errors import JinalocError
from jinaloc.index import Index
from jinaloc.index import search as search_mod
from jinaloc.index.search import embed_query, file_vector, search_vector
from jinaloc.index.store import Store
from jinaloc.walk import WalkOptions

DIM = 256  # the smallest dim searched in two stages
QUERIES = ["tomato basil sauce", "passport hotel", "tax invoice", "compost roses", "python bug"]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    make_notes(tmp / "notes", 200, paragraphs=4)
    store = Store.open(tmp / "index.db")
    fake = FakeEmbedder(hidden=DIM)
    # Small chunks: several per file, so best-per-file grouping matters.
    Index(store, lambda *a, **k: fake).update([(tmp / "notes", WalkOptions())], chunk_tokens=40)
    yield store, fake
    store.close()


def key(hits):
    return [(h.chunk_id, h.score) for h in hits]


@pytest.mark.parametrize("all_chunks", [False, True])
def test_two_stage_top_results_equal_exact(index, monkeypatch, all_chunks):
    store, fake = index
    assert store.counts()["chunks"] > 800
    # A real coarse stage: candidates well below the index size.
    monkeypatch.setattr(search_mod, "MIN_CANDIDATES", 1)
    monkeypatch.setattr(search_mod, "CANDIDATE_BITS", 0)
    for text in QUERIES:
        q = embed_query(fake, text, DIM)
        exact = search_vector(store, q, 10, exact=True, all_chunks=all_chunks)
        fast = search_vector(store, q, 10, all_chunks=all_chunks)
        assert key(fast) == key(exact), text


def test_small_dims_are_always_scanned_exactly(tmp_path, monkeypatch):
    make_notes(tmp_path / "notes", 20)
    with Store.open(tmp_path / "index.db") as store:
        fake = FakeEmbedder(hidden=64)
        Index(store, lambda *a, **k: fake).update([(tmp_path / "notes", WalkOptions())])

        def no_bits(*args, **kwargs):
            raise AssertionError("64 bits are too coarse for a first stage")

        monkeypatch.setattr(store, "knn_bits", no_bits)
        assert len(search_vector(store, embed_query(fake, "tax", 64), 5)) == 5


def test_best_chunk_per_file_by_default(index):
    store, fake = index
    q = embed_query(fake, "tomato basil sauce", DIM)
    hits = search_vector(store, q, 10)
    assert len({h.file_id for h in hits}) == 10
    assert all("cooking" in h.path or "garden" in h.path for h in hits[:5])
    chunks = search_vector(store, q, 10, all_chunks=True)
    assert len({h.file_id for h in chunks}) < 10
    assert chunks[0].score == hits[0].score
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_hit_fields(index):
    store, fake = index
    hit = search_vector(store, embed_query(fake, "passport", DIM), 1)[0]
    assert hit.path.endswith(".md") and hit.rel.startswith("travel/")
    assert hit.heading[0].startswith("Travel note")
    lines = Path(hit.path).read_text().splitlines()
    assert hit.text.splitlines()[0] == lines[hit.start_line - 1]
    assert hit.text.splitlines()[-1] == lines[hit.end_line - 1]
    j = hit.to_json()
    base = {"path", "start_line", "end_line", "heading", "title", "score", "text"}
    assert set(j) == base | {"mode", "semantic", "lexical", "page", "date", "tags"}
    assert j["mode"] == "semantic" and j["lexical"] is None
    assert j["semantic"] == {"score": j["score"], "rank": 1}


def test_path_filter_min_score_and_exclude(index):
    store, fake = index
    q = embed_query(fake, "tomato basil sauce", DIM)
    hits = search_vector(store, q, 5, path_glob="travel/*")
    assert len(hits) == 5 and all(h.rel.startswith("travel/") for h in hits)
    travel = embed_query(fake, "passport hotel luggage", DIM)
    assert key(search_vector(store, travel, 5, path_glob="travel/*")) == key(
        search_vector(store, travel, 5, path_glob="travel/*", exact=True)
    )
    assert search_vector(store, q, 5, path_glob="nothing/*") == []
    # With the indexed folder's own name in front, as an agent sees the tree.
    named = search_vector(store, q, 5, path_glob="notes/travel/*")
    assert key(named) == key(hits)
    assert search_vector(store, q, 5, path_glob="other/travel/*") == []
    best = search_vector(store, q, 3)
    assert search_vector(store, q, 3, min_score=best[0].score + 1e-6) == []
    assert len(search_vector(store, q, 3, min_score=best[2].score)) == 3
    rest = search_vector(store, q, 3, exclude_files=[best[0].file_id])
    assert best[0].file_id not in {h.file_id for h in rest}
    assert rest[0].file_id == best[1].file_id


def test_coarse_stage_widens_when_files_are_too_few(index, monkeypatch):
    store, fake = index
    monkeypatch.setattr(search_mod, "MIN_CANDIDATES", 1)
    monkeypatch.setattr(search_mod, "CANDIDATE_BITS", 0)
    q = embed_query(fake, "python bug", DIM)
    # oversample 1: k chunks only, mostly from the same few files; it must widen to k files.
    hits = search_vector(store, q, 30, oversample=1)
    assert len({h.file_id for h in hits}) == 30


def test_similar_from_stored_vectors(index):
    store, _ = index
    rec = store.file(next(p for _, p, rel in store.file_paths() if rel.startswith("finance/")))
    hits = search_vector(store, file_vector(store, rec.id), 5, exclude_files=[rec.id])
    assert rec.id not in {h.file_id for h in hits}
    assert sum(h.rel.startswith("finance/") for h in hits) >= 4


def test_bad_k(index):
    with pytest.raises(JinalocError, match="k must be"):
        search_vector(index[0], np.ones(DIM, np.float32), 0)

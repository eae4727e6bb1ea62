"""`jinaloc eval` and jinaloc.index.eval: metrics on hand-made rankings, query generation, the
numpy scan against brute force and against `search`, derived dims against direct
embeddings, and the command end to end on an index built with the tiny nano GGUF."""

from __future__ import annotations

import json
import math
import random
import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from index_helpers import have_gguf, nano_embedder
from test_cli_index import MODEL, cli

from jinaloc.chunking import embed_text
from jinaloc.errors import JinalocError
from jinaloc.index import eval as ev
from jinaloc.index import search as search_mod
from jinaloc.index.blocks import at_dim
from jinaloc.index.search import search
from jinaloc.index.store import Store
from jinaloc.vectors import l2_normalize, pack_bits

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "garden",
    "budget",
    "python",
    "travel",
    "museum",
    "harvest",
    "lantern",
    "copper",
    "winter",
    "meadow",
    "signal",
    "harbor",
    "violin",
    "pepper",
    "canyon",
    "orbit",
]


def make_notes(folder: Path, n: int = 16, seed: int = 1) -> None:
    """Notes with a title, three sections of their own and sentences, so that with a small
    chunk budget each note has several chunks."""
    rng = random.Random(seed)
    for i in range(n):
        sub = folder / f"t{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        lines = [f"# Note {i}", ""]
        for s in range(3):
            lines += [f"## {rng.choice(WORDS).title()} {rng.choice(WORDS)} {i}-{s}", ""]
            for _ in range(2):
                sentences = [
                    " ".join(rng.choice(WORDS) for _ in range(rng.randint(7, 11))).capitalize()
                    for _ in range(2)
                ]
                lines += [". ".join(sentences) + ".", ""]
        (sub / f"n{i:02d}.md").write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not have_gguf():
        pytest.skip("needs llama-cpp-python")
    tmp = tmp_path_factory.mktemp("eval")
    make_notes(tmp / "notes")
    db = tmp / "notes.db"
    cli("index", tmp / "notes", "--db", db, "--chunk-tokens", 64, "-q", *MODEL)
    return tmp, db


@pytest.fixture(scope="module")
def embedder(built):
    e = nano_embedder()
    yield e
    e.close()


@pytest.fixture
def store(built):
    with Store.open(built[1]) as s:
        yield s


def run_json(*args):
    return json.loads(cli("eval", *args, "--json", *MODEL).stdout)


# metrics on hand-made rankings


def test_metrics_exact_values():
    # Relevant a and b at ranks 1 and 3.
    recall, mrr, ndcg = ev.metrics(["a", "x", "b", "y"], {"a", "b"}, k=3)
    assert (recall, mrr) == (1.0, 1.0)
    assert ndcg == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    # Only a, at rank 3: outside k=2 for recall and MRR, inside nDCG@10.
    recall, mrr, ndcg = ev.metrics(["x", "y", "a"], {"a", "b"}, k=2)
    assert (recall, mrr) == (0.0, 0.0)
    assert ndcg == pytest.approx(0.5 / (1 + 1 / math.log2(3)))
    recall, mrr, ndcg = ev.metrics(["x", "y", "a"], {"a"}, k=3)
    assert (recall, mrr, ndcg) == (1.0, pytest.approx(1 / 3), pytest.approx(0.5))
    # nDCG cuts at 10 whatever k is.
    assert ev.metrics([*"bcdefghijk", "a"], {"a"}, k=20)[2] == 0.0
    assert ev.overlap([1, 2, 3], [3, 4, 1], k=3) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        ev.metrics(["a"], set(), k=1)


def _row(name, family, recall, bytes_per_chunk=None, dim=None, oversample=None):
    config = ev.Config(name, family, dim, oversample, None, bytes_per_chunk)
    return ev.Row(config, recall, recall, recall, 1.0, 0.0)


def test_recommend_picks_the_smallest_within_a_point():
    rows = [
        _row("float32@768", "float", 0.900, 3072, 768),
        _row("float32@256", "float", 0.895, 1024, 256),
        _row("float32@128", "float", 0.880, 512, 128),
        _row("int8@128", "int8", 0.850, 128, 128),
        _row("bits@768", "bits", 0.905, 96, 768),
        _row("bits@256", "bits", 0.70, 32, 256),
        _row("x2", "rescore", 0.80, 3168, 768, 2),
        _row("x10", "rescore", 0.899, 3168, 768, 10),
        _row("x20", "rescore", 0.90, 3168, 768, 20),
        _row("hybrid", "mode", 0.93),
        _row("semantic", "mode", 0.90),
    ]
    rec = ev.recommend(rows, "float32@768")
    assert rec.storage.config.name == "bits@768"
    assert rec.buildable.config.name == "float32@256"
    assert rec.oversample.config.oversample == 10
    assert rec.mode.config.name == "hybrid"


def test_eval_dims():
    assert ev.eval_dims([32, 64, 128, 256, 512, 768], 512) == [32, 64, 128, 256, 512]
    assert ev.eval_dims([], 300) == [32, 64, 128, 256, 300]
    assert ev.eval_dims([32, 64], 16) == [16]


# queries


def test_generated_queries_are_deterministic_and_leave_their_answer_out(store):
    first = ev.generate_queries(store, sample=10, seed=3)
    assert first == ev.generate_queries(store, sample=10, seed=3)
    assert first != ev.generate_queries(store, sample=10, seed=4)
    assert {q.kind for q in first} == {"heading", "passage"}
    docs = {d.path: d for d in store.iter_documents()}
    for q in first:
        (path,) = q.relevant
        doc = docs[path]
        assert doc.title.casefold() not in q.text.casefold()
        assert Path(path).stem not in q.text
        if q.kind == "heading":
            assert q.held_out is None
            owners = [p for p, d in docs.items() if any(q.text in h for h in d.headings)]
            assert owners == [path]  # a heading of this note and of no other
        else:
            ids = store.conn.execute(
                "SELECT c.id, c.text FROM chunks c JOIN files f ON f.id = c.file_id"
                " WHERE f.path = ? ORDER BY seq",
                (path,),
            ).fetchall()
            assert len(ids) >= 2
            held = dict(ids)[q.held_out]  # the held-out chunk is one of the note's own...
            assert " ".join(q.text.split()) in " ".join(held.split())  # ...the one it quotes
            others = [" ".join(t.split()) for c, t in ids if c != q.held_out]
            assert not any(q.text in t for t in others)  # and no other chunk repeats it


def _brute_force(store, vector, dim, held_out=None, signs=False):
    """Files by their best chunk, every chunk scored at once (the reference for scan)."""
    rows = store.conn.execute("SELECT id, file_id, full FROM chunks").fetchall()
    x = l2_normalize(at_dim([r[2] for r in rows], store.dim)[:, :dim])
    q = l2_normalize(vector[:dim])
    if signs:  # minus the Hamming distance of the packed sign bits
        packed, qp = pack_bits(x), pack_bits(q)
        scores = -np.unpackbits(packed ^ qp, axis=1).sum(axis=1).astype(np.float32)
    else:
        scores = x @ q
    best: dict[int, float] = {}
    for (chunk, file_id, _), s in zip(rows, scores, strict=True):
        if chunk != held_out:
            best[file_id] = max(best.get(file_id, -np.inf), float(s))
    return sorted(best, key=lambda f: (-best[f], f))


def _rescored(store, vector, candidates, held_out):
    rows = store.conn.execute("SELECT id, file_id, full FROM chunks").fetchall()
    rows = [r for r in rows if r[0] != held_out]
    x = at_dim([r[2] for r in rows], store.dim)
    hamming = np.unpackbits(pack_bits(x) ^ pack_bits(vector), axis=1).sum(axis=1)
    picked = sorted(range(len(rows)), key=lambda i: (hamming[i], rows[i][0]))[:candidates]
    best: dict[int, float] = {}
    for i in sorted(picked, key=lambda i: (-float(x[i] @ vector), rows[i][0])):
        best.setdefault(rows[i][1], 0.0)
    return list(best)


def test_scan_matches_brute_force_in_small_blocks(store, monkeypatch):
    """Blocks of a few chunks (files cut across fetches), held-out chunks left out, float
    and sign bits at a derived dim: the same files in the same order as scoring all at once."""
    monkeypatch.setattr(ev, "BLOCK", 7)
    monkeypatch.setattr(search_mod, "CANDIDATE_BITS", 0)  # 64 candidates at dim 64, not all
    assert store.counts()["chunks"] > 2 * 64  # so the rescoring stage leaves chunks out
    rows = store.conn.execute("SELECT id, full FROM chunks ORDER BY id").fetchall()
    picks = [rows[3], rows[20], rows[41]]
    vectors = at_dim([r[1] for r in picks], store.dim)
    held = [picks[0][0], None, picks[2][0]]
    configs = ev.vector_configs([32, 64], k=10)
    got = ev.scan(store, vectors, held, configs, k=10)
    for i, v in enumerate(vectors):
        for dim in (32, 64):
            assert got[f"float32@{dim}"][0][i] == _brute_force(store, v, dim, held[i])[:10]
        assert got["bits@32"][0][i] == _brute_force(store, v, 32, held[i], signs=True)[:10]
        # Bits then float: the top 64 chunks by Hamming distance (ties: lower id), rescored.
        assert got["bits→float32@64 x2"][0][i] == _rescored(store, v, 64, held[i])[:10]
    # A query equal to a chunk's vector finds that file first, unless the chunk is held out.
    own = store.conn.execute("SELECT file_id FROM chunks WHERE id = ?", (picks[1][0],)).fetchone()
    assert got["float32@64"][0][1][0] == own[0]


def test_scan_ranks_like_search(store, embedder):
    """float32 at the index dim, best chunk per file, equals `search` (semantic, exact)."""
    queries = [q for q in ev.generate_queries(store, 8, 0) if q.kind == "heading"]
    vectors = embedder.embed([q.text for q in queries], prompt="query", dim=64)
    configs = ev.vector_configs([64], k=5)
    got = ev.scan(store, vectors, [None] * len(queries), configs, k=5)["float32@64"][0]
    for ranked, q, v in zip(got, queries, vectors, strict=True):
        hits = search(store, q.text, v, 10, mode="semantic", exact=True)
        assert ranked[:10] == [h.file_id for h in hits]


def test_derived_low_dims_equal_direct_embeddings(store, embedder):
    """A stored vector sliced to 32 dims and renormalized is the model's 32-dim embedding."""
    doc = next(store.iter_documents())
    texts = [embed_text(doc.title, h, t) for h, t in zip(doc.headings, doc.texts, strict=True)]
    direct = embedder.embed(texts, task="retrieval", prompt="document", dim=32)
    derived = l2_normalize(doc.vectors[:, :32])
    # Kept in float16: about three significant digits per component.
    assert np.abs(derived - direct).max() < 1e-3
    assert (np.sum(derived * direct, axis=1) > 0.99999).all()
    # And the stored (full) vectors are the 64-dim ones.
    full = embedder.embed(texts, task="retrieval", prompt="document", dim=64)
    assert np.abs(doc.vectors - full).max() < 1e-3
    assert (np.sum(doc.vectors * full, axis=1) > 0.99999).all()


def test_rerank_hook(store, embedder):
    """The reranker gets hybrid's best `rerank_depth` files: one that keeps their order gives
    that order, one that reverses it puts the last of them first."""
    queries = [q for q in ev.generate_queries(store, 6, 1) if q.kind == "heading"]
    vectors = embedder.embed([q.text for q in queries], prompt="query", dim=64)
    keep = ev.run_modes(store, queries, vectors, 5, rerank=lambda q, t: [-i for i in range(len(t))])
    flip = ev.run_modes(store, queries, vectors, 5, rerank=lambda q, t: list(range(len(t))))
    for i, (q, v) in enumerate(zip(queries, vectors, strict=True)):
        hits = search(store, q.text, v, 30, mode="hybrid")
        assert keep["hybrid+rerank"][0][i] == [h.file_id for h in hits][:10]
        assert flip["hybrid+rerank"][0][i][0] == hits[-1].file_id


# the command


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    return struct.unpack(">II", data[16:24])


def test_eval_end_to_end_with_plot(built, tmp_path):
    pytest.importorskip("matplotlib")
    _, db = built
    png = tmp_path / "eval.png"
    # The issue's own command: the index's model (its folder, GGUF F32) loads by itself.
    out = cli("eval", "--db", db, "--plot", png).stdout
    for name in ("float32@64", "float32@32", "int8@32", "bits@64", "bits→float32@64 x2"):
        assert name in out
    for mode in ("hybrid", "semantic", "lexical"):
        assert re.search(rf"^\s*{mode}\s", out, re.MULTILINE)
    assert "smallest" in out and "mode:" in out
    width, height = _png_size(png)
    assert width > 300 and height > 200
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as image:
        image.verify()
        assert image.format == "PNG" and image.size == (width, height)


def test_eval_json(built):
    _, db = built
    result = run_json("--db", db, "--sample", 12, "--seed", 5)
    rows = {r["name"]: r for r in result["rows"]}
    assert result["dim"] == 64 and result["queries"] == sum(result["kinds"].values())
    assert set(result["kinds"]) == {"heading", "passage"}
    assert rows["float32@64"]["overlap"] == 1.0
    assert rows["bits@32"]["bytes_per_chunk"] == 4 and rows["int8@64"]["bytes_per_chunk"] == 64
    # At 64 dims every oversample keeps the same candidates (search.candidates): one row.
    assert [n for n in rows if n.startswith("bits→")] == ["bits→float32@64 x2"]
    assert rows["bits→float32@64 x2"]["bytes_per_chunk"] == 64 / 8 + 4 * 64
    # At dim 64 search scans exactly: its semantic mode is the numpy float scan, held-out
    # chunks included.
    for key in ("recall", "mrr", "ndcg"):
        assert rows["semantic"][key] == rows["float32@64"][key]
    for row in rows.values():
        assert 0 <= row["recall"] <= 1 and 0 <= row["ndcg"] <= 1 and row["ms_per_query"] >= 0
    assert result["recommendation"]["reference"] == "float32@64"
    assert any(line.startswith("smallest") for line in result["advice"])
    # Same seed, same queries, same numbers.
    again = run_json("--db", db, "--sample", 12, "--seed", 5)
    assert [r["recall"] for r in again["rows"]] == [r["recall"] for r in result["rows"]]


def test_queries_file_both_formats(built, tmp_path, monkeypatch):
    tmp, db = built
    monkeypatch.chdir(tmp)
    notes = sorted((tmp / "notes").rglob("*.md"))
    rel = [str(p.relative_to(tmp)) for p in notes]
    (tmp_path / "q.jsonl").write_text(
        json.dumps({"query": "harbor violin", "relevant": [rel[0], str(notes[1])]})
        + "\n"
        + json.dumps({"query": "copper lantern", "relevant": rel[2]})
        + "\n",
        encoding="utf-8",
    )
    (tmp_path / "q.tsv").write_text(
        f"# comment\nharbor violin\t{rel[0]}\nharbor violin\t{rel[1]}\ncopper lantern\t{rel[2]}\n",
        encoding="utf-8",
    )
    with Store.open(db) as store:
        jsonl = ev.read_queries(tmp_path / "q.jsonl", store)
        tsv = ev.read_queries(tmp_path / "q.tsv", store)
    assert jsonl == tsv
    assert jsonl[0] == ev.Query("harbor violin", (str(notes[0]), str(notes[1])))
    result = run_json("--db", db, "--queries", tmp_path / "q.tsv", "-k", 3)
    assert result["queries"] == 2 and result["kinds"] == {"file": 2} and result["k"] == 3


def _error(*args):
    result = cli("eval", *args, *MODEL, ok=(2,))
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    return lines[0]


def test_clear_errors(built, tmp_path):
    _, db = built
    assert "no index at" in _error("--db", tmp_path / "missing.db")
    Store.open(tmp_path / "empty.db", create=True).close()
    assert "is empty" in _error("--db", tmp_path / "empty.db")
    bad = tmp_path / "bad.tsv"
    bad.write_text("some query\tnotes/nowhere.md\n", encoding="utf-8")
    assert "bad.tsv line 1: notes/nowhere.md is not in the index" in _error(
        "--db", db, "--queries", bad
    )
    bad.write_text("just words\n", encoding="utf-8")
    assert "expected a JSON object or query<TAB>path" in _error("--db", db, "--queries", bad)
    bad.write_text('{"query": "x"}\n', encoding="utf-8")
    assert "line 1: expected" in _error("--db", db, "--queries", bad)
    bad.write_text("# only a comment\n", encoding="utf-8")
    assert "no queries" in _error("--db", db, "--queries", bad)


def test_plot_without_matplotlib_names_the_extra(built, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(JinalocError, match=r"jinaloc\[plot\]"):
        from jinaloc.plot import require_matplotlib

        require_matplotlib()
    line = _error("--db", built[1], "--plot", tmp_path / "x.png")
    assert "matplotlib" in line and "jinaloc[plot]" in line
    assert not (tmp_path / "x.png").exists()

"""The index file: schema and migrations, WAL, meta, atomic writes, reading back."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from jinaloc.errors import IndexNotFound, JinalocError
from jinaloc.index import store as store_mod
from jinaloc.index.store import SCHEMA_VERSION, NewChunk, Store
from jinaloc.vectors import l2_normalize

DIM = 12  # not a multiple of 8 (nor of 64): the bit words are padded


def vec(seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal(DIM))


def kept(v: np.ndarray) -> np.ndarray:
    """A vector as the index keeps it (float16) and reads it back (renormalized)."""
    return l2_normalize(np.asarray(v, np.float16).astype(np.float32))


def scanned(store) -> int:
    """How many chunks a scan sees."""
    return len(store.exact(vec(0), 10_000, per_file=False))


def chunk(i: int, text: str = "t") -> NewChunk:
    return NewChunk(i + 1, i + 2, ["H", str(i)], f"{text} {i}", 3, f"h{text}{i}", vec(i))


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "sub" / "index.db")
    s.set_meta({"model": "m", "dim": DIM})
    yield s
    s.close()


def add(store, path, n=2, text="t"):
    return store.write_file(
        path, "/r", path[3:], "hash-" + path, 10, 1, "Title", [chunk(i, text) for i in range(n)]
    )


def test_new_file_has_schema_wal_and_meta(store):
    conn = store.conn
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.meta() == {"model": "m", "dim": str(DIM)}
    assert store.dim == DIM


def test_reopen_keeps_data_and_does_not_migrate_again(tmp_path):
    s = Store.open(tmp_path / "i.db")
    s.set_meta({"model": "m", "dim": DIM})
    add(s, "/r/a.md")
    s.close()
    s = Store.open(tmp_path / "i.db", create=False)
    assert s.counts() == {"files": 1, "chunks": 2, "tokens": 6}
    s.close()


def test_missing_index_is_an_error_when_not_creating(tmp_path):
    with pytest.raises(IndexNotFound, match="no index at .*none.db") as e:
        Store.open(tmp_path / "none.db", create=False)
    assert e.value.path == tmp_path / "none.db"


def test_newer_schema_is_refused(tmp_path):
    s = Store.open(tmp_path / "i.db")
    s.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    s.close()
    with pytest.raises(JinalocError, match="newer than this jinaloc"):
        Store.open(tmp_path / "i.db")


def test_migrations_run_in_order_from_the_stored_version(tmp_path, monkeypatch):
    s = Store.open(tmp_path / "i.db")
    s.close()

    def extra(conn):
        conn.execute("CREATE TABLE later (x INTEGER)")
        conn.execute("INSERT INTO later VALUES (42)")

    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, extra])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    s = Store.open(tmp_path / "i.db")
    assert s.conn.execute("SELECT x FROM later").fetchone() == (42,)
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    s.close()


def test_write_replace_and_remove(store):
    a = add(store, "/r/a.md", 3)
    add(store, "/r/b.md", 2)
    assert store.counts()["chunks"] == 5
    assert add(store, "/r/a.md", 1, "new") == a  # replaced in place, same id
    assert store.counts() == {"files": 2, "chunks": 3, "tokens": 9}
    assert scanned(store) == 3
    store.remove_file(a)
    assert store.counts()["chunks"] == 2
    assert scanned(store) == 2
    assert store.file("/r/a.md") is None


def test_a_failed_write_leaves_nothing_behind(store):
    add(store, "/r/a.md", 2)
    bad = chunk(5)
    bad.hash = None  # NOT NULL: fails after the old chunks were deleted and one inserted
    with pytest.raises(Exception, match="NOT NULL"):
        store.write_file("/r/a.md", "/r", "a.md", "x", 1, 1, "T", [chunk(0, "new"), bad])
    assert store.file("/r/a.md").hash == "hash-/r/a.md"
    assert store.counts()["chunks"] == 2
    assert scanned(store) == 2


def test_a_vector_of_the_wrong_dim_is_refused(store):
    bad = chunk(0)
    bad.vector = np.zeros(DIM + 1, np.float32)
    with pytest.raises(ValueError, match="keeps 12"):
        store.write_file("/r/a.md", "/r", "a.md", "x", 1, 1, "T", [bad])


def test_move_keeps_chunks(store):
    a = add(store, "/r/a.md")
    store.move_file(a, "/r/sub/b.md", "/r", "sub/b.md", 11, 2)
    rec = store.file("/r/sub/b.md")
    assert (rec.id, rec.rel, rec.size, rec.mtime_ns) == (a, "sub/b.md", 11, 2)
    assert len(store.file_vectors(a)) == 2


def test_files_under_uses_path_prefix(store):
    for p in ("/r/a.md", "/r/x/b.md", "/rr/c.md"):
        add(store, p)
    assert sorted(store.files_under("/r")) == ["/r/a.md", "/r/x/b.md"]
    assert sorted(store.files_under("/r/x/")) == ["/r/x/b.md"]


def test_vectors_for_hashes(store):
    add(store, "/r/a.md", 2)
    found = store.vectors_for_hashes(["ht0", "ht1", "nope"])
    assert set(found) == {"ht0", "ht1"}
    np.testing.assert_allclose(found["ht1"], vec(1), atol=1e-3)  # kept in float16


def test_iter_documents_gives_texts_and_vectors(store):
    add(store, "/r/b.md", 2)
    add(store, "/r/a.md", 3)
    docs = list(store.iter_documents())
    assert [d.path for d in docs] == ["/r/a.md", "/r/b.md"]
    a = docs[0]
    assert a.title == "Title"
    assert a.texts == ["t 0", "t 1", "t 2"]
    assert a.headings[1] == ["H", "1"]
    assert a.vectors.shape == (3, DIM) and a.vectors.dtype == np.float32
    np.testing.assert_array_equal(a.vectors[2], kept(vec(2)))
    assert [d.path for d in store.iter_documents(["/r/b.md"])] == ["/r/b.md"]


def test_knn_bits_and_exact_scores(store):
    add(store, "/r/a.md", 4)
    add(store, "/r/b.md", 4, "u")
    q = vec(2)
    ids = store.knn_bits(q, 3)
    assert len(ids) == 3
    scores = {c: s for c, _, s in store.scores(q, ids)}
    exact = store.exact(q, 8, per_file=False)
    assert [s for _, _, s in exact] == sorted((s for _, _, s in exact), reverse=True)
    assert exact[0][2] == pytest.approx(1.0, abs=1e-6)
    for c, _, s in exact:
        if c in scores:
            assert scores[c] == pytest.approx(s, abs=1e-6)  # the same vectors and maths
    per_file = store.exact(q, 8, per_file=True)
    assert len(per_file) == 2
    only_b = store.exact(q, 8, per_file=True, file_ids=[store.file("/r/b.md").id])
    assert [f for _, f, _ in only_b] == [store.file("/r/b.md").id]


def test_no_extension_support_names_what_to_install(tmp_path, monkeypatch):
    class NoExt:
        OperationalError = RuntimeError

        @staticmethod
        def connect(*args, **kwargs):
            return types.SimpleNamespace(close=lambda: None)  # no enable_load_extension

    monkeypatch.setitem(sys.modules, "sqlite3", NoExt)
    monkeypatch.setitem(sys.modules, "pysqlite3", None)
    with pytest.raises(JinalocError, match="pip install pysqlite3-binary"):
        Store.open(tmp_path / "x.db")


def test_a_file_that_is_not_an_index_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a database " * 100)
    with pytest.raises(JinalocError, match="cannot open index .*notes.txt"):
        Store.open(tmp_path / "notes.txt")

"""Incremental indexing with a model-free embedder: counts, renames, bad files, resume."""

from __future__ import annotations

import os
import shutil

import pytest
from index_helpers import FakeEmbedder, make_notes

from jinaloc.errors import IndexMismatch, JinalocError
from jinaloc.index import Index, health
from jinaloc.index.store import Store
from jinaloc.index.write import Report
from jinaloc.walk import WalkOptions


class Loader:
    """An Index loader that counts how often the model was loaded."""

    def __init__(self, embedder=None):
        self.embedder = embedder or FakeEmbedder()
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.embedder


@pytest.fixture
def db(tmp_path):
    s = Store.open(tmp_path / "index.db")
    yield s
    s.close()


def run(store, roots, loader=None, options=None, **kw):
    loader = loader or Loader()
    roots = roots if isinstance(roots, list) else [roots]
    report = Index(store, loader).update([(r, options or WalkOptions()) for r in roots], **kw)
    return report, loader


def counts(report):
    j = report.to_json()
    return {k: j[k] for k in ("added", "updated", "unchanged", "removed", "renamed", "skipped")}


def consistent(store):
    """Files, chunks and bit vectors agree, and SQLite finds no corruption."""
    conn = store.conn
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    assert health.check(store) == []  # blocks and chunks agree too
    assert conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == chunks
    orphans = conn.execute(
        "SELECT count(*) FROM chunks WHERE file_id NOT IN (SELECT id FROM files)"
    ).fetchone()[0]
    empty = conn.execute(
        "SELECT count(*) FROM files WHERE id NOT IN (SELECT file_id FROM chunks)"
    ).fetchone()[0]
    assert (orphans, empty) == (0, 0)


def test_incremental_counts_rename_move_delete_edit(db, tmp_path):
    root = tmp_path / "notes"
    paths = make_notes(root, 40)
    report, loader = run(db, root)
    assert counts(report) == dict(added=40, updated=0, unchanged=0, removed=0, renamed=0, skipped=0)
    assert report.chunks_embedded > 0 and report.tokens > 0

    # Nothing changed: nothing read into the model, not even loaded.
    report, loader = run(db, root)
    assert counts(report)["unchanged"] == 40 and report.chunks_embedded == 0
    assert loader.calls == 0

    paths[0].rename(paths[0].with_name("renamed.md"))
    (root / "elsewhere").mkdir()
    paths[1].rename(root / "elsewhere" / paths[1].name)  # moved to another folder
    paths[2].unlink()
    paths[3].unlink()
    paths[4].write_text(paths[4].read_text() + "\nA new line about oranges.\n")
    (root / "new.md").write_text("# Brand new\n\nFresh content.\n")
    os.utime(paths[5], ns=(1, 1))  # touched, same content
    report, loader = run(db, root)
    assert counts(report) == dict(added=1, updated=1, unchanged=35, removed=2, renamed=2, skipped=0)
    renamed = dict(report.renamed)
    assert renamed[str(paths[0])] == str(paths[0].with_name("renamed.md"))
    assert renamed[str(paths[1])] == str(root / "elsewhere" / paths[1].name)
    assert db.file(str(paths[2])) is None
    assert db.counts()["files"] == 39
    consistent(db)

    report, _ = run(db, root)
    assert counts(report)["unchanged"] == 39 and report.chunks_embedded == 0


def test_copies_and_unchanged_sections_reuse_vectors(db, tmp_path):
    root = tmp_path / "notes"
    root.mkdir()
    sections = [f"## Part {i}\n\n" + " ".join(f"w{i}x{j}" for j in range(40)) for i in range(6)]
    (root / "long.md").write_text("# Long\n\n" + "\n\n".join(sections) + "\n")
    report, loader = run(db, root, chunk_tokens=60)
    n = report.chunks_embedded
    assert n >= 4

    shutil.copy(root / "long.md", root / "copy.md")
    report, loader = run(db, root)
    assert report.added == 1 and report.chunks_embedded == 0 and report.chunks_reused == n

    sections[3] = "## Part 3\n\nrewritten entirely"
    (root / "long.md").write_text("# Long\n\n" + "\n\n".join(sections) + "\n")
    report, loader = run(db, root)
    assert report.updated == 1 and report.chunks_embedded == 1
    assert loader.embedder.embedded == ["Long > Part 3\n\n## Part 3\n\nrewritten entirely"]
    consistent(db)


def test_bad_files_are_skipped_with_reasons(db, tmp_path):
    root = tmp_path / "notes"
    make_notes(root, 5)
    png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(200)
    (root / "image.png").write_bytes(png)  # not a note type: left out, counted
    (root / "misnamed.txt").write_bytes(png)
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "empty.md").write_text("")
    (root / "big.md").write_text("x " * 3000)
    locked = root / "locked.md"
    locked.write_text("secret")
    locked.chmod(0)
    os.symlink(root, root / "loop")
    try:
        report, _ = run(db, root, options=WalkOptions(max_size=4000))
    finally:
        locked.chmod(0o644)
    reasons = {os.path.basename(p): r for p, r in report.skipped}
    assert report.left_out == {".png": 1}
    assert reasons.pop("misnamed.txt") == "binary file"
    assert reasons.pop("latin1.txt") == "not valid UTF-8 (byte 3)"
    assert reasons.pop("empty.md") == "empty"
    assert reasons.pop("big.md") == "too large (6000 bytes > 4000)"
    assert reasons.pop("loop") == "symlink loop"
    if os.geteuid() != 0:  # root reads a chmod 000 file; test_files covers the reason
        assert reasons.pop("locked.md") == "permission denied"
        assert report.added == 5
    assert reasons == {}
    assert db.counts()["files"] == report.added
    consistent(db)


def test_a_file_that_turns_bad_is_removed(db, tmp_path):
    root = tmp_path / "notes"
    paths = make_notes(root, 3)
    run(db, root)
    paths[0].write_bytes(b"\0\0binary now")
    report, _ = run(db, root)
    assert (report.removed, len(report.skipped), report.unchanged) == (1, 1, 2)
    assert db.file(str(paths[0])) is None


def test_ignored_files_leave_the_index(db, tmp_path):
    root = tmp_path / "notes"
    make_notes(root, 10)
    run(db, root)
    (root / ".jinalocignore").write_text("travel/\n")
    report, _ = run(db, root)
    assert report.removed == 2 and report.unchanged == 8


def test_several_roots_in_one_file(db, tmp_path):
    make_notes(tmp_path / "a", 3)
    make_notes(tmp_path / "b", 4, seed=1)
    report, _ = run(db, [tmp_path / "a", tmp_path / "b"])
    assert report.added == 7
    assert sorted(db.roots()) == [str(tmp_path / "a"), str(tmp_path / "b")]
    # Indexing one root again does not touch the other's files.
    report, _ = run(db, tmp_path / "a")
    assert (report.unchanged, report.removed) == (3, 0)
    assert db.counts()["files"] == 7


def test_model_dim_and_chunking_mismatch_refused(db, tmp_path):
    root = tmp_path / "notes"
    make_notes(root, 2)
    run(db, root, dim=32)
    assert db.meta()["dim"] == "32"
    with pytest.raises(IndexMismatch, match="indexed at dim 32, not 16: re-index") as e:
        Index(db, Loader()).check(dim=16)
    assert (e.value.setting, e.value.have, e.value.wanted) == ("dim", 32, 16)
    with pytest.raises(IndexMismatch, match="chunked at 512 tokens, not 100"):
        run(db, root, chunk_tokens=100)
    (root / "new.md").write_text("new")
    other = Loader(FakeEmbedder(name="other-model"))
    with pytest.raises(JinalocError, match="indexed with model fake-model, not other-model"):
        run(db, root, loader=other)
    assert db.counts()["files"] == 2


def test_another_backend_of_the_same_model_is_fine(db, tmp_path):
    root = tmp_path / "notes"
    make_notes(root, 2)
    run(db, root)
    embedder = FakeEmbedder()
    embedder.backend.name = "mlx"
    (root / "new.md").write_text("new")
    report, _ = run(db, root, loader=Loader(embedder))
    assert report.added == 1


class Interrupting(FakeEmbedder):
    """Ctrl-C arrives during the n-th forward pass."""

    def __init__(self, after: int):
        super().__init__()
        self.after = after

    def embed_with_counts(self, texts, *args, **kwargs):
        self.after -= 1
        if self.after < 0:
            raise KeyboardInterrupt
        return super().embed_with_counts(texts, *args, **kwargs)


def test_interrupted_run_keeps_finished_files_and_resumes(db, tmp_path, monkeypatch):
    monkeypatch.setattr("jinaloc.index.write.STEP_CHUNKS", 4)
    root = tmp_path / "notes"
    make_notes(root, 30)
    partial = Report()
    with pytest.raises(KeyboardInterrupt):
        Index(db, Loader(Interrupting(after=3))).update([(root, WalkOptions())], report=partial)
    done = partial.added
    assert 0 < done < 30
    assert db.counts()["files"] == done
    consistent(db)
    report, loader = run(db, root)
    assert (report.added, report.unchanged) == (30 - done, done)
    assert db.counts()["files"] == 30


def test_file_vector_of_an_unindexed_file(db, tmp_path):
    root = tmp_path / "notes"
    make_notes(root, 2)
    run(db, root)
    outside = tmp_path / "outside.md"
    outside.write_text("# Outside\n\nsome words here\n")
    vector = Index(db, Loader()).embed_file(outside)
    assert vector.shape == (64,)
    with pytest.raises(JinalocError, match="missing.md"):
        Index(db, Loader()).embed_file(tmp_path / "missing.md")


def test_a_file_given_as_root_is_unchanged_on_the_next_run(db, tmp_path):
    note = tmp_path / "single.md"
    note.write_text("# One\n\njust one note\n")
    assert run(db, note)[0].added == 1
    report, loader = run(db, note)
    assert (report.added, report.unchanged, loader.calls) == (0, 1, 0)


def test_the_index_file_inside_the_folder_is_left_out(tmp_path):
    make_notes(tmp_path, 3)
    with Store.open(tmp_path / "index.db") as store:
        report, _ = run(store, tmp_path)
        report, _ = run(store, tmp_path)  # now with -wal and -shm files next to it
    assert (report.unchanged, report.skipped) == (3, [])


def test_index_redim_and_cache_from_python(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 20)
    fake = FakeEmbedder()
    with Index.open(tmp_path / "at64.db", create=True, loader=lambda *a, **k: fake) as idx:
        idx.update([notes], dim=64)
        want = [(h.path, h.score) for h in idx.search("pasta dough", 5, mode="semantic")]
    db = tmp_path / "api.db"
    with Index.open(db, create=True, loader=lambda *a, **k: fake) as idx:
        idx.update([notes], dim=32)
        assert (idx.meta.dim, idx.meta.kept_dim) == (32, 64)
        calls = len(fake.calls)
        idx.redim(64)
        assert len(fake.calls) == calls  # nothing embedded
        assert idx.meta.dim == 64 and idx.store.dim == 64
        with pytest.raises(JinalocError, match="cannot give dim 65"):
            idx.redim(65)
    with Index.open(db, cache_mb=64, loader=lambda *a, **k: fake) as idx:
        assert idx.store.cache.budget == 64 << 20
        got = [(h.path, h.score) for h in idx.search("pasta dough", 5, mode="semantic")]
        assert idx.store.cache.used == 0  # under 1024 chunks: nothing packed, nothing cached
    assert [p for p, _ in got] == [p for p, _ in want]
    assert all(abs(a - b) < 1e-6 for (_, a), (_, b) in zip(got, want, strict=True))
    with Store.open(db, create=False) as store:
        assert health.check(store) == []


def test_a_local_model_embeds_a_whole_step_in_length_sorted_passes(tmp_path):
    """Texts of several files go to the model together (STEP_CHUNKS), so its passes group
    texts of like length across files; progress still hears each pass."""
    from jinaloc.index import Progress
    from jinaloc.index.write import STEP_CHUNKS

    notes = tmp_path / "notes"
    make_notes(notes, 70, paragraphs=1, words=8)  # one short chunk each
    fake = FakeEmbedder()
    passes = []

    class Heard(Progress):
        def embedded(self, texts, tokens):
            passes.append(texts)

    with Index.open(tmp_path / "i.db", create=True, loader=lambda *a, **k: fake) as idx:
        report = idx.update([notes], progress=Heard())
    assert report.added == 70 and STEP_CHUNKS >= 70
    assert len(fake.calls) == 1  # one step: every file's chunk in one call
    assert passes == [32, 32, 6]  # the embedder's passes of 32, each heard

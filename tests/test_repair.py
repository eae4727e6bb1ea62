"""`check --repair` on damaged files (the corruption matrix), and never removing or
emptying an index another process uses: the failed first run, `--reindex` beside the old
index, error advice that fits the cause."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from index_helpers import FakeEmbedder, make_notes
from typer.testing import CliRunner

from jinaloc.cli import app
from jinaloc.errors import IndexUnrepairable
from jinaloc.index import Index, health, salvage, store
from jinaloc.index.store import Store

NOTES = 40


def fake(*a, **k):
    return FakeEmbedder()


def build(notes: Path, db: Path) -> None:
    with Index.open(db, create=True, loader=fake) as idx:
        idx.update([notes])
    with Store.open(db, create=False) as s:
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("clean")
    notes = base / "notes"
    make_notes(notes, NOTES)
    # An alias and a table split over chunks: their stored texts must check out too.
    rows = "\n".join(f"| row {i} | tomato basil {i} |" for i in range(400))
    (notes / "table.md").write_text(
        f"---\naliases: [Big table]\n---\n# Table\n\n| a | b |\n|---|---|\n{rows}\n"
    )
    db = base / "clean.db"
    build(notes, db)
    return notes, db


def chunk_rows(db: Path) -> dict[int, tuple]:
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT c.id, f.path, c.seq, c.start_line, c.end_line, c.text, c.hash, c.full"
        " FROM chunks c JOIN files f ON f.id = c.file_id"
    ).fetchall()
    conn.close()
    return {r[0]: r[1:] for r in rows}


def pages_of(data: bytes) -> tuple[dict[int, int], dict[int, int], int]:
    """Where each chunk row and each file row lives in a sound file: id -> page; and the
    page of the meta table."""
    chunks, files, meta = {}, {}, 0
    for page, rowid, values in salvage.scan(data).rows:
        if len(values) == 12 and isinstance(values[10], bytes):
            chunks[rowid] = page
        elif len(values) == 12 and isinstance(values[1], str):
            files[rowid] = page
        elif len(values) == 2 and values[0] == "model":
            meta = page
    return chunks, files, meta


def damage(data: bytes, case: str, size: int, rng: random.Random) -> tuple[bytes, set[int]]:
    """The damaged bytes and the pages damaged."""
    out = bytearray(data)
    pages = len(data) // size
    chunk_pages = sorted(set(pages_of(data)[0].values()))
    if case == "header":
        out[:100] = bytes(100)
        return bytes(out), {1}
    if case == "page 1":
        out[:size] = rng.randbytes(size)
        return bytes(out), {1}
    if case == "last page":
        out[-size:] = rng.randbytes(size)
        return bytes(out), {pages}
    if case in ("middle page", "orphan + damage", "# in the path"):
        page = chunk_pages[len(chunk_pages) // 2]
        out[(page - 1) * size : page * size] = rng.randbytes(size)
        return bytes(out), {page}
    if case == "truncation":
        cut = int(len(data) * 0.6)
        return bytes(out[:cut]), set(range(cut // size + 1, pages + 1))
    if case == "random flips":
        hit = set()
        for _ in range(12):
            at = rng.randrange(len(out))
            out[at] ^= 1 << rng.randrange(8)
            hit.add(at // size + 1)
        return bytes(out), hit
    raise ValueError(case)


CASES = [
    "header",
    "page 1",
    "last page",
    "middle page",
    "truncation",
    "random flips",
    "orphan + damage",
    "# in the path",
]


def run_case(clean, tmp_path: Path, case: str, seed: int) -> dict:
    """Damage a copy, repair it, update it: what was kept, lost and re-embedded."""
    notes, clean_db = clean
    name = "a#b?c.db" if case == "# in the path" else "index.db"
    db = tmp_path / name
    shutil.copy(clean_db, db)
    orphans = 0
    if case == "orphan + damage":
        conn = sqlite3.connect(db)
        conn.execute("DELETE FROM files WHERE id = (SELECT max(id) FROM files)")
        conn.commit()
        orphans = conn.execute(
            "SELECT count(*) FROM chunks WHERE file_id NOT IN (SELECT id FROM files)"
        ).fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    before = chunk_rows(db)
    data = db.read_bytes()
    chunk_page, file_page, meta_page = pages_of(data)
    conn = sqlite3.connect(db)
    file_of = dict(conn.execute("SELECT id, file_id FROM chunks"))
    conn.close()
    size = salvage.page_size(data)
    damaged, pages = damage(data, case, size, random.Random(seed))
    db.write_bytes(damaged)
    # Unreadable: chunks on damaged pages, and chunks whose file row is (or was) gone.
    unreadable = {
        cid
        for cid, page in chunk_page.items()
        if page in pages
        or file_page.get(file_of.get(cid)) in pages
        or file_of.get(cid) not in file_page
    }
    try:
        result = health.repair(db)
    except IndexUnrepairable:
        assert meta_page in pages  # only when the meta itself was damaged
        assert db.read_bytes() == damaged  # refused: nothing replaced
        return {"case": case, "refused": True}
    after = chunk_rows(db)
    kept = {cid for cid in before if after.get(cid) == before[cid]}
    lost = set(before) - kept
    assert lost <= unreadable, (case, sorted(lost - unreadable)[:5])
    with Store.open(db, create=False) as s:
        assert health.check(s) in (
            [],
            [health.Problem("files to re-embed (run `index`)", len(result.files_to_reembed))],
        )
    embedder = FakeEmbedder()
    with Index.open(db, loader=lambda *a, **k: embedder) as idx:
        report = idx.update()
    reembedded = report.chunks_embedded
    # Only what was lost is embedded again (and the orphans' file, whose row was gone).
    assert reembedded <= len(lost) + orphans, (case, reembedded, len(lost))
    return {
        "case": case,
        "refused": False,
        "damaged": {before[cid][:2] for cid in unreadable if cid in before},
        "chunks": len(before),
        "unreadable": len(unreadable),
        "kept": len(kept),
        "lost": len(lost),
        "reembedded": reembedded,
        "files_to_reembed": len(result.files_to_reembed),
        "db": db,
    }


def same_as_clean(clean, db: Path, damaged: set = frozenset()) -> int:
    """Assert the index at `db` holds what the clean build does. Vectors may differ only
    for chunks in `damaged` ((path, seq) on a damaged page), and only a little: a flipped
    sign or low mantissa bit of a vector not yet packed into a block keeps its norm, and no
    copy is left to compare it with. Returns how many differ so."""
    notes, clean_db = clean
    a, b = chunk_rows(clean_db), chunk_rows(db)
    key = lambda rows: sorted(r[:6] for r in rows.values())  # noqa: E731
    assert key(a) == key(b)
    va = {r[:2]: np.frombuffer(r[6], np.float16).astype(np.float32) for r in a.values()}
    vb = {r[:2]: np.frombuffer(r[6], np.float16).astype(np.float32) for r in b.values()}
    differ = 0
    for k, v in va.items():
        if not np.allclose(v, vb[k], atol=1e-3):
            assert k in damaged and float(v @ vb[k]) > 0.9, (k, float(v @ vb[k]))
            differ += 1
    with Store.open(db, create=False) as s:
        assert health.check(s) == []
    # Chunk ids differ after a re-embedding: equal scores may come in another order. bm25
    # scores are compared by the notes they find: FTS5 does not count deletes from a
    # contentless-delete table in its document total, so any update (a re-embedded file
    # here) moves them a little (SQLite 3.51: 10 notes, one edited: 11 counted).
    for query in ("tomato basil", "train ticket airport", "python function tests"):
        for mode in ("semantic", "lexical"):
            results = []
            for path in (clean_db, db):
                with Index.open_built(path, loader=fake) as idx:
                    hits = idx.search(query, 100, mode=mode)
                score = (lambda h: round(h.score, 4)) if mode == "semantic" else (lambda h: 0)
                results.append(sorted((h.path, score(h)) for h in hits))
            if not differ:
                assert results[0] == results[1], (query, mode)
    return differ


@pytest.mark.parametrize("case", CASES)
def test_corruption_matrix_loses_only_the_unreadable_and_converges(clean, tmp_path, case):
    row = run_case(clean, tmp_path, case, seed=CASES.index(case))
    if not row["refused"]:
        same_as_clean(clean, row["db"], row["damaged"])


def test_rows_only_in_the_wal_are_salvaged(clean, tmp_path):
    notes = tmp_path / "notes"
    shutil.copytree(clean[0], notes)
    live, db = tmp_path / "live.db", tmp_path / "wal.db"
    build(notes, live)
    for path in sorted(notes.rglob("*.md"))[:5]:
        path.write_text(path.read_text() + "\nan edit that only the -wal holds\n")
    with Index.open(live, loader=fake) as idx:
        assert idx.update().updated == 5
        # Copied while a connection is open: the edits are in the -wal, not in the file.
        shutil.copy(live, db)
        shutil.copy(f"{live}-wal", f"{db}-wal")
    data = bytearray(db.read_bytes())
    size = salvage.page_size(bytes(data))
    wal = Path(f"{db}-wal").read_bytes()
    in_wal = {int.from_bytes(wal[at : at + 4], "big") for at in range(32, len(wal), 24 + size)}
    page = next(p for p in sorted(set(pages_of(bytes(data))[0].values())) if p not in in_wal)
    # The page scan sees what SQLite sees: the file with the -wal's committed frames.
    merged = tmp_path / "merged.db"
    shutil.copy(live, merged)  # checkpointed when the last connection closed
    seen = {(r, tuple(v)) for _, r, v in salvage.scan(salvage.with_wal(bytes(data), wal)).rows}
    assert seen == {(r, tuple(v)) for _, r, v in salvage.scan(merged.read_bytes()).rows}
    data[(page - 1) * size : page * size] = bytes(size)
    db.write_bytes(bytes(data))
    result = health.repair(db)
    assert result.salvaged and Path(f"{result.backup}-wal").is_file()
    with Index.open(db, loader=fake) as idx:
        idx.update()
    same_as_clean((notes, live), db)


def test_a_sound_index_checks_clean_with_aliases_and_split_tables(clean):
    _, db = clean
    with Store.open(db, create=False, readonly=True) as s:
        assert health.check(s) == []
        assert s.conn.execute("SELECT count(*) FROM chunks WHERE text LIKE '| row%'").fetchone()[0]


def test_check_finds_flipped_text_and_vectors_that_integrity_misses(clean, tmp_path):
    _, clean_db = clean
    db = tmp_path / "x.db"
    shutil.copy(clean_db, db)
    conn = sqlite3.connect(db)
    (cid, full), (cid2,) = (
        conn.execute("SELECT id, full FROM chunks ORDER BY id LIMIT 1").fetchone(),
        conn.execute("SELECT id FROM chunks ORDER BY id DESC LIMIT 1").fetchone(),
    )
    bad = bytearray(full)
    bad[1] ^= 0x40  # an exponent bit: the vector is no longer of unit length
    conn.execute("UPDATE chunks SET full = ? WHERE id = ?", (bytes(bad), cid))
    conn.execute("UPDATE chunks SET text = text || 'x' WHERE id = ?", (cid2,))
    conn.commit()
    conn.close()
    with Store.open(db, create=False, readonly=True) as s:
        kinds = {p.kind: p.count for p in health.check(s)}
    assert kinds["vectors of the wrong size or norm"] == 1
    assert kinds["chunks whose text does not match its hash"] == 1
    r = CliRunner().invoke(app, ["check", "--db", str(db)])
    assert r.exit_code == 1 and "check --repair" in r.stdout
    result = health.repair(db)
    assert result.rows_dropped == {
        "vectors of the wrong size or norm": 1,
        "chunks whose text does not match its hash": 1,
    }
    assert 1 <= len(result.files_to_reembed) <= 2 and not result.salvaged
    embedder = FakeEmbedder()
    with Index.open(db, loader=lambda *a, **k: embedder) as idx:
        report = idx.update()
    assert report.chunks_embedded == 2  # the two dropped chunks, nothing else
    same_as_clean(clean, db)


def test_repair_waits_for_the_writer_lock(clean, tmp_path):
    _, clean_db = clean
    db = tmp_path / "x.db"
    shutil.copy(clean_db, db)
    with store.writer_lock(db), pytest.raises(Exception, match="being updated"):
        health.repair(db, wait=False)


def test_cli_repair_reports_kept_lost_and_reembedded(clean, tmp_path, monkeypatch):
    notes, clean_db = clean
    db = tmp_path / "x.db"
    shutil.copy(clean_db, db)
    data = bytearray(db.read_bytes())
    page = sorted(set(pages_of(bytes(data))[0].values()))[2]
    size = salvage.page_size(bytes(data))
    data[(page - 1) * size : page * size] = bytes(size)
    db.write_bytes(bytes(data))
    import jinaloc.cli.maintain as maintain

    monkeypatch.setattr(maintain, "load_embedder", fake)
    r = CliRunner().invoke(app, ["check", "--db", str(db), "--repair", "--json"])
    out = json.loads(r.stdout)
    assert r.exit_code == 0 and out["ok"], r.stdout
    rep = out["repair"]
    assert rep["salvaged"] and rep["rows_kept"]["chunks"] > 0 and rep["files_to_reembed"]
    assert Path(rep["backup"]).is_file()
    same_as_clean(clean, db)


# --- never delete or empty what another process uses ----------------------------------------


def jinaloc(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "jinaloc", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        **kw,
    )


def hold_open(db: Path, sql: str = "SELECT 1") -> subprocess.Popen:
    """Another process with the index open (and `sql` run on it), until it is killed.
    In this process the locks would not show: POSIX locks are per process."""
    code = (
        "import sys, time; from jinaloc.index.store import Store;"
        f"s = Store.open({str(db)!r}); s.conn.execute({sql!r}); print('open', flush=True);"
        "time.sleep(60)"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.stdout.readline().strip() == "open"
    return p


def test_a_failed_first_run_never_removes_a_file_another_has_open(tmp_path):
    db = tmp_path / "new.db"
    claimed = store.claim_new(db)
    assert claimed and store.claim_new(db) is None  # only one process makes it
    other = hold_open(db)  # another run has it open (schema only, nothing written yet)
    try:
        assert not store.remove_if_unused(db, claimed)
        assert db.exists()
    finally:
        other.kill()
        other.wait()
    with store.writer_lock(db):  # another run is writing
        assert not store.remove_if_unused(db, claimed)
    with Store.open(db) as s:
        s.set_root("/x", {})
    assert not store.remove_if_unused(db, claimed)  # something was written
    fresh = tmp_path / "fresh.db"
    mine = store.claim_new(fresh)
    Store.open(fresh).close()
    assert store.remove_if_unused(fresh, mine) and not fresh.exists()


def test_a_writer_whose_file_was_replaced_refuses_to_write(tmp_path):
    db = tmp_path / "x.db"
    mine = store.claim_new(db)
    idx = Index.open(db, create=True)
    try:
        db.unlink()
        Path(f"{db}-wal").unlink(missing_ok=True)
        with pytest.raises(Exception, match="removed or replaced"), idx.writing():
            pass
    finally:
        idx.close()
    assert mine


def test_two_first_runs_one_failing_leave_the_live_one_whole(tmp_path, nano_dir):
    notes = tmp_path / "notes"
    make_notes(notes, 30)
    db = tmp_path / "new.db"
    model = ["--model", nano_dir, "--backend", "onnx", "--quant", "fp32"]
    bad = jinaloc("index", notes, "--db", db, "--model", tmp_path / "no-such-model")
    good = jinaloc("index", notes, "--db", db, *model, "--json")
    _, err = bad.communicate(timeout=120)
    out, gerr = good.communicate(timeout=300)
    # The bad run fails (or, when the good one is done first, has nothing to embed).
    assert bad.returncode in (0, 2) and "Traceback" not in err, err
    if good.returncode == 0:
        assert json.loads(out)["added"] == 30
        with Store.open(db, create=False, readonly=True) as s:
            assert s.counts()["files"] == 30
    else:  # it lost the race to the file being removed: it said so, and claimed nothing
        assert "removed or replaced" in gerr and "Traceback" not in gerr, gerr


def test_reindex_builds_beside_and_a_kill_leaves_the_old_index(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 40)
    db = tmp_path / "x.db"
    build(notes, db)
    before = chunk_rows(db)
    code = (
        "import sys, time; sys.path.insert(0, 'tests');"
        "from index_helpers import FakeEmbedder;"
        "from jinaloc.index import Index;"
        "import jinaloc.index.write as ix; ix.STEP_CHUNKS = 4\n"
        "class Slow(FakeEmbedder):\n"
        "    def embed_with_counts(self, *a, **k):\n"
        "        print('embedding', flush=True); time.sleep(0.2)\n"
        "        return super().embed_with_counts(*a, **k)\n"
        f"idx = Index.open({str(db)!r}, loader=lambda *a, **k: Slow('other-model'))\n"
        f"idx.use_model('other-model').rebuild([{str(notes)!r}])\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    for _ in range(3):
        assert p.stdout.readline().startswith("embedding")
    # Mid-rebuild, searches read the old index, whole.
    with Index.open_built(db, loader=fake) as idx:
        assert idx.meta.model == "fake-model"
        assert len(idx.search("tomato basil", 5, mode="lexical")) == 5
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert chunk_rows(db) == before
    with Store.open(db, create=False) as s:
        assert health.check(s) == []
    # Run to the end, it replaces the old index in one transaction.
    with Index.open(db, loader=lambda *a, **k: FakeEmbedder("other-model")) as idx:
        report = idx.use_model("other-model").rebuild([notes])
    assert report.added == 40 and not Path(f"{db}.reindex").exists()
    with Index.open_built(db, loader=fake) as idx:
        assert idx.meta.model == "other-model" and idx.store.counts()["files"] == 40


# --- errors advise what fits the cause ------------------------------------------------------


def test_errors_advise_what_fits_the_cause(tmp_path, monkeypatch):
    p = Path("/i.db")
    for text, advice in (
        ("database is locked", "wait"),
        ("database or disk is full", "free some space"),
        ("attempt to write a readonly database", "writable"),
        ("unable to open database file", "writable"),
        ("database disk image is malformed", "repair"),
    ):
        line = str(store.open_error(p, sqlite3.OperationalError(text)))
        assert advice in line, (text, line)
        assert ("repair" in line) == (advice == "repair"), line
    # A lock held by another connection: after the busy timeout, "wait", not "repair".
    notes = tmp_path / "notes"
    make_notes(notes, 3)
    db = tmp_path / "x.db"
    build(notes, db)
    (notes / "new.md").write_text("# New\n\nfresh words")
    holder = hold_open(db, "BEGIN EXCLUSIVE")
    monkeypatch.setattr(store, "BUSY_MS", 200)
    import jinaloc.cli.index as cli_index

    monkeypatch.setattr(cli_index, "load_embedder", fake)
    try:
        r = CliRunner().invoke(app, ["index", "--db", str(db)])
    finally:
        holder.kill()
        holder.wait()
    assert r.exit_code == 2 and "wait" in r.stderr and "repair" not in r.stderr, r.stderr

    # A full disk while writing: "free some space".
    def full(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "write_file", full)
    (notes / "other.md").write_text("# Other\n\nmore words")
    r = CliRunner().invoke(app, ["index", "--db", str(db)])
    assert r.exit_code == 2 and "free some space" in r.stderr and "repair" not in r.stderr


def test_a_repair_without_the_meta_refuses_and_changes_nothing(clean, tmp_path):
    _, clean_db = clean
    db = tmp_path / "x.db"
    shutil.copy(clean_db, db)
    data = bytearray(db.read_bytes())
    size = salvage.page_size(bytes(data))
    meta = pages_of(bytes(data))[2]
    data[(meta - 1) * size : meta * size] = bytes(size)
    db.write_bytes(bytes(data))
    r = CliRunner().invoke(app, ["check", "--db", str(db), "--repair"])
    assert r.exit_code == 2 and "nothing was changed" in r.stderr, r.stderr
    assert "mv " in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert db.read_bytes() == bytes(data)
    # No copy and no half-made file left.
    assert not (tmp_path / "x.db.corrupt").exists() and not (tmp_path / "x.db.salvage").exists()


def test_reindex_of_an_index_with_other_pages_and_of_a_new_file(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 5)
    old = tmp_path / "old.db"
    store.new_file(old, 4096)  # as older releases made them
    build(notes, old)
    with Index.open(old, loader=fake) as idx:
        assert idx.use_model().rebuild([notes]).added == 5
        assert idx.store.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    fresh = tmp_path / "fresh.db"
    with Index.open(fresh, create=True, loader=fake) as idx:
        assert idx.rebuild([notes]).added == 5
    with Index.open_built(fresh, loader=fake) as idx:
        assert idx.store.counts()["files"] == 5


def test_an_immutable_index_says_make_it_writable(tmp_path, monkeypatch):
    notes = tmp_path / "notes"
    make_notes(notes, 3)
    db = tmp_path / "x.db"
    build(notes, db)
    if subprocess.run(["chattr", "+i", db], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not allowed here")
    try:
        (notes / "new.md").write_text("# New\n\nfresh words")
        import jinaloc.cli.index as cli_index

        monkeypatch.setattr(cli_index, "load_embedder", fake)
        r = CliRunner().invoke(app, ["index", "--db", str(db)])
    finally:
        subprocess.run(["chattr", "-i", db])
    assert r.exit_code == 2 and "writable" in r.stderr and "repair" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

"""Indexes written by earlier releases keep working: opened, migrated, searched, updated.

tests/data/schema-v1.db was built by jinaloc 0.1.0 (schema 1) with the tiny nano GGUF F32
from tests/data/schema-v1-notes (indexed then as /tmp/v1notes, dim 64); schema-v1-search.json
holds what that release's `search "pasta dough"` returned. schema-v2.db, -v3 and -v4 were
built by the commits that introduced schemas 2 (e988a2e), 3 (b367239) and by the last
schema-4 one (a2634ab), with the same model and dim, from tests/data/schema-v4-notes
(indexed as /tmp/v4notes); schema-v4-search.json holds what that release's search returned.
Every later schema change must keep these tests green."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import model_dir
from index_helpers import have_gguf
from typer.testing import CliRunner

from jinaloc.cli import app
from jinaloc.index import health
from jinaloc.index.store import SCHEMA_VERSION, Store, _connect, _reader

DATA = Path(__file__).parent / "data"
MODEL = ["--model", str(model_dir("nano")), "--backend", "gguf", "--quant", "F32"]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args, ok=0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == ok, result.stderr
    return result


def relocated(version: int, tmp_path: Path) -> Path:
    """A copy of the schema-N index whose notes exist: the notes it was built from, copied to
    tmp_path/vNnotes (v2 to v4 share v4's), its paths rewritten there without migrating it
    (searches leave out files that do not exist)."""
    built = "v1notes" if version == 1 else "v4notes"
    notes = tmp_path / built
    shutil.copytree(DATA / f"schema-{built.replace('notes', '-notes')}", notes)
    db = tmp_path / f"v{version}.db"
    shutil.copy(DATA / f"schema-v{version}.db", db)
    conn = _connect(str(db))
    old, new = f"/tmp/{built}", str(notes)
    conn.execute(
        "UPDATE files SET path = replace(path, ?, ?), root = replace(root, ?, ?)", (old, new) * 2
    )
    conn.execute("UPDATE roots SET path = replace(path, ?, ?)", (old, new))
    conn.close()
    return db


@pytest.fixture
def v1(tmp_path) -> Path:
    return relocated(1, tmp_path)


def test_v1_index_opens_and_migrates_without_a_model(v1):
    # status needs no model: the index's model_ref (the builder's fixture path) may not exist.
    info = json.loads(cli("status", "--db", v1, "--json").stdout)
    assert (info["files"], info["chunks"], info["dim"], info["model"]) == (3, 3, 64, "tiny-v5-nano")
    with Store.open(v1, create=False) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
def test_v1_index_searches_as_the_release_did(v1):
    want = json.loads((DATA / "schema-v1-search.json").read_text())
    args = ("search", want["query"], "--db", v1, "--json", "--mode", "semantic", *MODEL)
    rows = json.loads(cli(*args).stdout)
    got = [(r["path"].removeprefix(f"{v1.parent}/v1notes/"), r["start_line"]) for r in rows]
    assert got == [(r["rel"], r["start_line"]) for r in want["results"]]
    for row, old in zip(rows, want["results"], strict=True):
        assert abs(row["score"] - old["score"]) < 1e-4


@pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
def test_v1_index_updates_reusing_its_vectors(v1, tmp_path):
    notes = tmp_path / "notes"
    shutil.copytree(DATA / "schema-v1-notes", notes)
    report = json.loads(cli("index", notes, "--db", v1, "--json", "-q", *MODEL).stdout)
    # Same texts as the stored chunks: their vectors are reused, nothing is embedded.
    assert (report["added"], report["chunks_reused"], report["chunks_embedded"]) == (3, 3, 0)
    (notes / "new.md").write_text("# New\n\nA note written after the upgrade.\n")
    report = json.loads(cli("index", notes, "--db", v1, "--json", "-q", *MODEL).stdout)
    assert (report["added"], report["unchanged"], report["chunks_embedded"]) == (1, 3, 1)
    rows = json.loads(cli("search", "upgrade", "--db", v1, "--json", "-k", "1", *MODEL).stdout)
    assert rows[0]["path"].endswith("new.md")


def test_v1_index_gains_dates_then_tags_on_the_next_run_without_embedding(v1, tmp_path):
    notes = tmp_path / "notes"
    shutil.copytree(DATA / "schema-v1-notes", notes)
    pasta = notes / "cooking" / "pasta.md"
    # Front matter it had when indexed (v1 too kept front matter out of the chunks).
    pasta.write_text("---\ntags: [food]\n---\n" + pasta.read_text())
    with Store.open(v1, create=False) as store:
        # The migration gave every file its mtime's date and left its tags to be read.
        assert (
            store.conn.execute("SELECT count(*) FROM files WHERE date IS NULL").fetchone()[0] == 0
        )
        assert (
            store.conn.execute("SELECT count(*) FROM files WHERE meta IS NULL").fetchone()[0] == 3
        )
        # The same files, as if they had stayed where the index found them.
        for path, rel in store.conn.execute("SELECT path, rel FROM files").fetchall():
            st = (notes / rel).stat()
            store.conn.execute(
                "UPDATE files SET path = ?, root = ?, size = ?, mtime_ns = ?, hash = ?"
                " WHERE path = ?",
                (
                    str(notes / rel),
                    str(notes),
                    st.st_size,
                    st.st_mtime_ns,
                    sha256_of(notes / rel),
                    path,
                ),
            )
        store.conn.execute("UPDATE roots SET path = ?", (str(notes),))
    info = json.loads(cli("status", "--db", v1, "--json").stdout)
    assert info["changed"]["reread"] == 3 and info["changed"]["modified"] == 0
    # No model is needed (the index's own model_ref may not exist) and nothing is embedded.
    report = json.loads(cli("index", "--db", v1, "--json", "-q").stdout)
    assert (report["reread"], report["unchanged"], report["chunks_embedded"]) == (3, 3, 0)
    rows = json.loads(
        cli("search", "pasta", "--db", v1, "--json", "--mode", "lexical", "--tag", "food").stdout
    )
    assert [r["path"] for r in rows] == [str(pasta)]
    info = json.loads(cli("status", "--db", v1, "--json").stdout)
    assert sum(info["changed"].values()) == 0


def test_v1_index_gains_the_lexical_table_without_a_model(v1):
    # No --model, and the index's own model_ref may not exist: lexical mode loads no model.
    rows = json.loads(cli("search", "Kyoto", "--db", v1, "--json", "--mode", "lexical").stdout)
    assert [r["path"] for r in rows] == [f"{v1.parent}/v1notes/travel/japan.md"]
    assert rows[0]["lexical"]["rank"] == 1 and rows[0]["semantic"] is None
    with Store.open(v1, create=False) as store:
        assert store.conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == 3


def test_status_reports_a_newer_schema_instead_of_failing(v1):
    with Store.open(v1, create=False) as store:
        store.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    info = json.loads(cli("status", "--db", v1, "--json").stdout)
    assert info["schema_version"] == SCHEMA_VERSION + 1 and "upgrade jinaloc" in info["error"]
    text = cli("status", "--db", v1).stdout
    assert "newer than this jinaloc" in text
    # Every other command refuses it in one line.
    r = CliRunner().invoke(app, ["search", "x", "--db", str(v1)])
    assert r.exit_code == 2 and "upgrade jinaloc" in r.stderr


# Schema 4, the last one with float vectors in `chunks` and sign bits in a vec0 table:
# tests/data/schema-v4.db was built by this release before schema 5 (tiny nano GGUF F32,
# dim 64) from tests/data/schema-v4-notes, indexed as /tmp/v4notes.


@pytest.fixture
def v4(tmp_path) -> Path:
    return relocated(4, tmp_path)


def test_v4_index_moves_its_vectors_into_blocks_without_a_model(v4):
    before = _reader(v4)  # a plain read: no migration
    assert before.execute("PRAGMA user_version").fetchone()[0] == 4
    assert before.execute("SELECT count(*) FROM vec_bits").fetchone()[0] == 4
    before.close()
    with Store.open(v4, create=False) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert health.check(store) == []
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
        assert "vec_bits" not in tables and {"vec_blocks", "vec_live"} <= tables
        columns = {r[1] for r in store.conn.execute("PRAGMA table_info(chunks)")}
        assert "embedding" not in columns and {"full", "slot"} <= columns
        # It kept what it had: vectors at its dim, so it can only re-dim lower.
        assert (store.dim, store.full_dim) == (64, 64)
        sizes = {r[0] for r in store.conn.execute("SELECT length(full) FROM chunks")}
        assert sizes == {2 * 64}
    info = json.loads(cli("status", "--db", v4, "--json").stdout)
    assert (info["files"], info["chunks"], info["dim"], info["kept_dim"]) == (4, 4, 64, 64)


@pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
def test_v4_index_searches_as_the_release_did(v4):
    want = json.loads((DATA / "schema-v4-search.json").read_text())
    args = ("search", want["query"], "--db", v4, "--json", "--mode", "semantic", *MODEL)
    rows = json.loads(cli(*args).stdout)
    got = [(r["path"].removeprefix(f"{v4.parent}/v4notes/"), r["start_line"]) for r in rows]
    assert got == [(r["rel"], r["start_line"]) for r in want["results"]]
    for row, old in zip(rows, want["results"], strict=True):
        assert abs(row["score"] - old["score"]) < 1e-3  # vectors now kept in float16


@pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
def test_v4_index_redims_lower_without_its_model_and_refuses_higher(v4):
    with Store.open(v4, create=False) as store:  # its model cannot be loaded: none is needed
        store.set_meta({"model_ref": "/nonexistent/model"})
    report = json.loads(cli("index", "--db", v4, "--dim", "32", "--json", "-q").stdout)
    assert report["redim"]["from"] == 64 and report["redim"]["to"] == 32
    assert report["chunks_embedded"] == 0
    r = CliRunner().invoke(app, ["index", "--db", str(v4), "--dim", "128"])
    assert r.exit_code == 2 and "keeps 64-dim vectors, so it cannot give dim 128" in r.stderr
    rows = json.loads(
        cli("search", "pasta dough", "--db", v4, "--json", "--mode", "semantic", *MODEL).stdout
    )
    assert rows[0]["path"] == f"{v4.parent}/v4notes/cooking/pasta.md"
    with Store.open(v4, create=False) as store:
        assert store.dim == 32 and health.check(store) == []


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_every_earlier_schema_upgrades_in_place_and_serves(version, tmp_path):
    db = relocated(version, tmp_path)
    before = _reader(db)
    assert before.execute("PRAGMA user_version").fetchone()[0] == version
    files = before.execute("SELECT count(*) FROM files").fetchone()[0]
    before.close()
    info = json.loads(cli("status", "--db", db, "--json").stdout)  # migrates, no model
    assert (info["files"], info["dim"], info["schema_version"]) == (files, 64, SCHEMA_VERSION)
    with Store.open(db, create=False) as store:
        assert health.check(store) == []
    rows = json.loads(cli("search", "Kyoto", "--db", db, "--json", "--mode", "lexical").stdout)
    assert rows[0]["path"].endswith("travel/japan.md")
    # Schema 6 rebuilt the lexical tables from the stored texts: stems, one row per file.
    rows = json.loads(cli("search", "simmering", "--db", db, "--json", "--mode", "lexical").stdout)
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["pasta.md"]
    with Store.open(db, create=False) as store:
        files_fts = store.conn.execute("SELECT count(*) FROM files_fts").fetchone()[0]
        assert files_fts == files
    if have_gguf():
        args = ("search", "pasta dough", "--db", db, "--json", "--mode", "semantic", *MODEL)
        rows = json.loads(cli(*args).stdout)
        assert rows[0]["path"].endswith("cooking/pasta.md")
        assert abs(rows[0]["score"] - 0.814845) < 1e-3  # as every release scored it
    report = json.loads(cli("index", "--db", db, "--dim", "32", "--json", "-q").stdout)
    assert report["redim"] == {**report["redim"], "from": 64, "to": 32}

"""`jinaloc index / search / status / similar` end to end on the tiny nano GGUF fixture,
in-process and as real subprocesses interrupted mid-run."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import model_dir
from index_helpers import cli, have_gguf, make_notes
from typer.testing import CliRunner

from jinaloc.cli import app
from jinaloc.index import health
from jinaloc.index.store import Store

pytestmark = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")

N = 150
MODEL = ["--model", str(model_dir("nano")), "--backend", "gguf", "--quant", "F32"]


def index_json(*args):
    return json.loads(cli("index", *args, "--json", "-q").stdout)


def counts(report):
    keys = ("added", "updated", "unchanged", "removed", "renamed", "skipped")
    return tuple(report[k] for k in keys)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """150 small notes indexed once; tests that change things copy it."""
    tmp = tmp_path_factory.mktemp("cli")
    notes = tmp / "notes"
    make_notes(notes, N, paragraphs=2, words=12)
    db = tmp / "index.db"
    report = index_json(notes, "--db", db, *MODEL)
    assert counts(report) == (N, 0, 0, 0, 0, 0)
    return notes, db


@pytest.fixture
def work(indexed, tmp_path):
    """A private copy of the notes and their index (paths rewritten by re-indexing)."""
    import shutil

    notes, db = indexed
    shutil.copytree(notes, tmp_path / "notes", copy_function=shutil.copy2)
    with Store.open(db, create=False) as src:
        src.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(db, tmp_path / "index.db")
    with Store.open(tmp_path / "index.db") as store:
        store.conn.execute(
            "UPDATE files SET path = replace(path, ?, ?), root = replace(root, ?, ?)",
            (str(notes), str(tmp_path / "notes")) * 2,
        )
        store.conn.execute("UPDATE roots SET path = ?", (str(tmp_path / "notes"),))
    return tmp_path / "notes", tmp_path / "index.db"


def test_edit_rename_delete_then_reindex_counts(work):
    notes, db = work
    assert counts(index_json(notes, "--db", db)) == (0, 0, N, 0, 0, 0)
    files = sorted(notes.rglob("*.md"))
    for p in files[:5]:
        p.write_text(p.read_text() + "\nedited: a new line about lemons\n")
    for p in files[5:9]:
        p.rename(p.with_name("renamed-" + p.name))
    (notes / "moved").mkdir()
    files[9].rename(notes / "moved" / files[9].name)
    for p in files[10:13]:
        p.unlink()
    (notes / "fresh.md").write_text("# Fresh\n\nA brand new note.\n")
    status = json.loads(cli("status", "--db", db, "--json").stdout)
    assert status["changed"] == {"new": 1, "modified": 5, "renamed": 5, "deleted": 3, "reread": 0}
    report = index_json("--db", db)  # no PATH: the roots the index already has
    assert counts(report) == (1, 5, N - 13, 3, 5, 0)
    assert report["chunks_embedded"] >= 6
    status = json.loads(cli("status", "--db", db, "--json").stdout)
    assert status["files"] == N - 2
    assert sum(status["changed"].values()) == 0


def test_search_outputs(indexed, monkeypatch):
    notes, db = indexed
    monkeypatch.chdir(notes.parent)
    rows = json.loads(cli("search", "tomato basil garlic", "--db", db, "--json").stdout)
    assert len(rows) == 10
    base = {"path", "start_line", "end_line", "heading", "title", "score", "text"}
    assert set(rows[0]) == base | {"mode", "semantic", "lexical", "page", "date", "tags"}
    assert rows[0]["mode"] == "hybrid"
    assert rows[0]["path"].startswith("notes/")
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert len({r["path"] for r in rows}) == 10  # best chunk per file

    lines = cli("search", "tomato basil garlic", "--db", db, "--jsonl", "-k", "3").stdout
    assert [json.loads(x) for x in lines.splitlines()] == rows[:3]

    paths = cli("search", "tomato basil garlic", "--db", db, "--files").stdout.splitlines()
    assert paths == [r["path"] for r in rows]

    plain = cli("search", "tomato basil garlic", "--db", db, "-k", "2").stdout.splitlines()
    path_line, score, heading, snippet = plain[0].split("\t")
    assert path_line == f"{rows[0]['path']}:{rows[0]['start_line']}"
    assert float(score) == pytest.approx(rows[0]["score"], abs=1e-4)
    assert heading == rows[0]["heading"] and snippet and not snippet.startswith("#")

    piped = cli("search", "--db", db, "--json", input="tomato basil garlic\n").stdout
    assert json.loads(piped) == rows


def test_search_all_chunks_path_filter_and_no_match(indexed):
    notes, db = indexed
    rows = json.loads(
        cli("search", "passport", "--db", db, "--json", "--path", "travel/*", "-k", "5").stdout
    )
    assert len(rows) == 5 and all("/travel/" in r["path"] for r in rows)
    result = cli("search", "passport", "--db", db, "--min-score", "1.5", ok=(1,))
    assert result.stdout == ""
    result = cli("search", "passport", "--db", db, "--json", "--path", "nowhere/*", ok=(1,))
    assert json.loads(result.stdout) == []
    result = cli("search", "x", "--db", db, "--json", "--files", ok=(2,))
    assert "choose one of" in result.stderr


def test_two_stage_equals_exact(indexed, monkeypatch):
    # The fixture's 64 dims are below COARSE_MIN_DIM (always exact); force the two stages
    # through the CLI here. Their recall at realistic dims is tested in test_search.
    monkeypatch.setattr("jinaloc.index.search.COARSE_MIN_DIM", 1)
    notes, db = indexed
    for query in ("tomato basil", "airport hotel", "tax invoice", "python bug", "roses"):
        for extra in ([], ["--all-chunks"]):
            args = ("search", query, "--db", db, "--json", "-k", "5", "--oversample", "40", *extra)
            fast = json.loads(cli(*args).stdout)
            exact = json.loads(cli(*args, "--exact").stdout)
            assert fast == exact, query


def test_status(indexed):
    notes, db = indexed
    s = json.loads(cli("status", "--db", db, "--json").stdout)
    assert (s["files"], s["chunks"], s["model"], s["dim"]) == (N, N, "tiny-v5-nano", 64)
    assert s["backend"] == "gguf" and s["quant"] == "F32" and s["task"] == "retrieval"
    assert s["bit_order"] == "lsb-first" and s["db_bytes"] > 0
    assert s["roots"][0]["path"] == str(notes) and s["roots"][0]["files"] == N
    text = cli("status", "--db", db).stdout
    assert "tiny-v5-nano" in text and str(N) in text


def test_similar_uses_stored_vectors(indexed, monkeypatch):
    notes, db = indexed
    target = sorted((notes / "finance").glob("*.md"))[0]

    def no_model(*args, **kwargs):
        raise AssertionError("similar loaded a model for an indexed note")

    monkeypatch.setattr("jinaloc.load.load_embedder", no_model)
    rows = json.loads(cli("similar", target, "--db", db, "--json", "-k", "5").stdout)
    assert len(rows) == 5 and all(r["path"] != str(target) for r in rows)


def test_similar_embeds_a_file_outside_the_index(indexed, tmp_path):
    notes, db = indexed
    outside = tmp_path / "outside.md"
    outside.write_text("# Outside\n\npassport airport hotel luggage\n")
    paths = cli("similar", outside, "--db", db, "--files", "-k", "3").stdout.splitlines()
    assert len(paths) == 3


def test_model_and_dim_mismatch_refused(work):
    notes, db = work
    small = str(model_dir("small"))
    result = cli("search", "x", "--db", db, "--model", small, ok=(2,))
    assert "indexed with model tiny-v5-nano, not tiny-v5-small" in result.stderr
    assert "--reindex" in result.stderr
    # A dim the kept vectors cannot give (the fixture model's are 64 wide) is refused.
    result = cli("index", notes, "--db", db, "--dim", "128", ok=(2,))
    assert "keeps 64-dim vectors, so it cannot give dim 128" in result.stderr
    # --reindex keeps the model and its quantization unless told otherwise.
    report = index_json(notes, "--db", db, "--reindex", "--dim", "32")
    assert report["added"] == N
    status = json.loads(cli("status", "--db", db, "--json").stdout)
    assert (status["dim"], status["model"], status["quant"]) == (32, "tiny-v5-nano", "F32")
    assert len(json.loads(cli("search", "tax", "--db", db, "--json").stdout)) == 10


def test_another_backend_of_the_same_model_is_allowed(indexed):
    pytest.importorskip("mlx.core")
    notes, db = indexed
    gguf = json.loads(cli("search", "tax invoice", "--db", db, "--json", "-k", "3").stdout)
    mlx = cli("search", "tax invoice", "--db", db, "--json", "-k", "3", "--backend", "mlx")
    assert [r["path"] for r in json.loads(mlx.stdout)] == [r["path"] for r in gguf]


def test_errors_are_one_line_with_exit_2(tmp_path):
    result = cli("search", "x", "--db", tmp_path / "none.db", ok=(2,))
    assert "no index at" in result.stderr and "build one with `jinaloc index PATH`" in result.stderr
    result = cli("index", tmp_path / "missing", "--db", tmp_path / "i.db", ok=(2,))
    assert "no such file or folder" in result.stderr
    result = cli("index", "--db", tmp_path / "i.db", ok=(2,))
    assert "nothing to index" in result.stderr
    result = cli("index", "--db", tmp_path / "i.db", "--include", "*.md", ok=(2,))
    assert "go with the PATHs" in result.stderr


def test_default_db_is_under_the_data_dir(tmp_path, monkeypatch):
    make_notes(tmp_path / "notes", 2)
    index_json(tmp_path / "notes", *MODEL)
    assert (Path(os.environ["JINALOC_DATA_DIR"]) / "index.db").is_file()
    monkeypatch.setenv("JINALOC_DB", str(tmp_path / "env.db"))
    index_json(tmp_path / "notes", *MODEL)
    assert (tmp_path / "env.db").is_file()


def test_progress_on_a_terminal_and_summary(tmp_path, monkeypatch):
    from rich.console import Console

    from jinaloc.cli import index as index_cli

    screen = io.StringIO()
    monkeypatch.setattr(index_cli, "err_console", Console(file=screen, force_terminal=True))
    make_notes(tmp_path / "notes", 6, paragraphs=1, words=5)
    (tmp_path / "notes" / "bad.md").write_bytes(b"\0\1\2")
    cli("index", tmp_path / "notes", "--db", tmp_path / "i.db", *MODEL)
    shown = screen.getvalue()
    assert "tok/s" in shown and "chunks" in shown  # the bar was drawn
    assert "indexed: 6 added" in shown and "bad.md: binary" in shown
    result = cli("index", tmp_path / "notes", "--db", tmp_path / "i.db", "-q")
    assert result.stderr == ""


def test_help_has_examples():
    for command in ("index", "search"):
        assert "Examples" in cli(command, "--help").stdout


# Real processes, slowed down so that a signal lands mid-run.

SLOW_INDEX = """
import signal, sys, time
import jinaloc.embedder, jinaloc.index.write
# Ctrl-C as on a terminal, even when pytest itself runs in the background (SIGINT ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)
jinaloc.index.write.STEP_CHUNKS = 4
embed = jinaloc.embedder.Embedder.embed_with_counts
def slow(self, *args, **kwargs):
    time.sleep(0.15)
    return embed(self, *args, **kwargs)
jinaloc.embedder.Embedder.embed_with_counts = slow
from jinaloc.cli import main
sys.argv[0] = "jinaloc"
main()
"""


def start_slow_index(notes: Path, db: Path) -> subprocess.Popen:
    args = [sys.executable, "-c", SLOW_INDEX, "index", str(notes), "--db", str(db), *MODEL]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def indexed_files(db: Path) -> int:
    """Files committed so far, read like any other reader would (WAL)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.OperationalError:  # schema not there yet
        return 0
    finally:
        conn.close()


def wait_for_files(proc, db: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while indexed_files(db) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "indexing did not get going"
        time.sleep(0.05)


def check_consistent(db: Path) -> int:
    with Store.open(db, create=False) as store:
        conn = store.conn
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert health.check(store) == []  # blocks and chunks agree too
        assert conn.execute(
            "SELECT count(*) FROM files WHERE id NOT IN (SELECT file_id FROM chunks)"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM chunks WHERE file_id NOT IN (SELECT id FROM files)"
        ).fetchone() == (0,)
        return store.counts()["files"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)],
    ids=["SIGINT", "SIGTERM", "SIGKILL"],
)
def test_killed_mid_run_then_resumed(tmp_path, sig, code):
    notes = tmp_path / "notes"
    make_notes(notes, 200, paragraphs=1, words=12)
    db = tmp_path / "index.db"
    proc = start_slow_index(notes, db)
    wait_for_files(proc, db, 12)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    if sig != signal.SIGKILL:
        assert "interrupted:" in err and "run the same command again to resume" in err
    done = check_consistent(db)
    assert 12 <= done < 200
    report = index_json(notes, "--db", db, *MODEL)
    assert (report["added"], report["unchanged"], report["removed"]) == (200 - done, done, 0)
    assert check_consistent(db) == 200


@pytest.mark.slow
def test_search_while_indexing(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 200, paragraphs=1, words=12)
    db = tmp_path / "index.db"
    proc = start_slow_index(notes, db)
    try:
        wait_for_files(proc, db, 4)
        seen = []
        while proc.poll() is None and len(seen) < 5:
            rows = json.loads(cli("search", "tomato", "--db", db, "--json", "-k", "3").stdout)
            assert len(rows) == 3
            seen.append(indexed_files(db))
        assert seen and proc.poll() is None, "indexing finished before the searches ran"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    check_consistent(db)


def test_index_dim_redims_in_place_without_the_model_and_back(work, tmp_path):
    notes, db = work
    query = ("search", "notes about the weather", "--mode", "semantic", "--json", *MODEL)
    full = [(r["path"], r["score"]) for r in json.loads(cli(*query, "--db", db).stdout)]
    with Store.open(db, create=False) as store:  # the model cannot be loaded: none is needed
        store.set_meta({"model_ref": "/nonexistent/model"})
    report = index_json(notes, "--db", db, "--dim", "32")
    assert report["redim"]["from"] == 64 and report["redim"]["to"] == 32
    assert (report["chunks_embedded"], report["unchanged"]) == (0, N)
    status = json.loads(cli("status", "--db", db, "--json").stdout)
    assert (status["dim"], status["kept_dim"]) == (32, 64)
    assert "dim 32 (vectors kept at 64)" in cli("status", "--db", db).stdout
    # The same ranking as an index built at dim 32 from the start.
    fresh = tmp_path / "fresh32.db"
    index_json(notes, "--db", fresh, "--dim", "32", *MODEL)
    got = [(r["path"], r["score"]) for r in json.loads(cli(*query, "--db", db).stdout)]
    want = [(r["path"], r["score"]) for r in json.loads(cli(*query, "--db", fresh).stdout)]
    assert [p for p, _ in got] == [p for p, _ in want]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(got, want, strict=True))
    # And back up to the whole vector: the first ranking again.
    report = index_json(notes, "--db", db, "--dim", "64")
    assert report["redim"]["to"] == 64 and report["chunks_embedded"] == 0
    back = [(r["path"], r["score"]) for r in json.loads(cli(*query, "--db", db).stdout)]
    assert [p for p, _ in back] == [p for p, _ in full]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(back, full, strict=True))
    with Store.open(db, create=False) as store:
        assert health.check(store) == []
    # A dim the model was not trained for, or wider than it, is refused in one line.
    r = CliRunner().invoke(app, ["index", str(notes), "--db", str(db), "--dim", "65"])
    assert r.exit_code == 2 and "cannot give dim 65" in r.stderr

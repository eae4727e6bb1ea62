"""Damaged, read-only and busy index files; forgetting folders; nested roots; the CLI's
terminal manners (one-line errors when piped, SIGPIPE, no emoji codes in data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, model_dir
from index_helpers import FakeEmbedder, have_gguf, make_notes
from typer.testing import CliRunner

from jinaloc.cli import app
from jinaloc.errors import IndexBusy, JinalocError
from jinaloc.index import Index, blocks, health
from jinaloc.index.store import Store
from jinaloc.walk import WalkOptions

MODEL = ["--model", str(model_dir("nano")), "--backend", "gguf", "--quant", "F32"]
needs_gguf = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")


def cli(*args, ok=(0,)):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code in ok, (r.exit_code, r.stdout, r.stderr)
    return r


def jinaloc(*args, cwd=None, input=None):
    """The real command in a subprocess (stderr not a terminal), as a script would run it."""
    return subprocess.run(
        [sys.executable, "-m", "jinaloc", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        input=input,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def fake_index(tmp_path: Path, n: int = 12) -> tuple[Path, Path]:
    notes = tmp_path / "notes"
    make_notes(notes, n)
    db = tmp_path / "index.db"
    with Index.open(db, create=True, loader=lambda *a, **k: FakeEmbedder()) as idx:
        idx.update([notes])
    return notes, db


def corrupt(path: Path) -> None:
    """Random bytes written over the middle of the file, as a bad disk or copy would."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16384] = os.urandom(16384)
    path.write_bytes(bytes(data))


# --- damaged files ------------------------------------------------------------------------


def damaged_copy(tmp_path: Path) -> tuple[Path, Path]:
    notes, db = fake_index(tmp_path, 60)
    with Store.open(db, create=False) as store:
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    corrupt(copy)
    return notes, copy


def test_check_finds_and_repair_fixes_a_damaged_file(tmp_path):
    notes, copy = damaged_copy(tmp_path)
    with Store.open(copy, create=False, readonly=True) as store:
        assert health.check(store)[0].kind == "integrity"
    result = health.repair(copy)
    assert result.salvaged and Path(result.backup).is_file()
    with Store.open(copy, create=False) as store:
        assert health.check(store) == []
        kept = store.counts()["files"]
    assert 0 < kept <= 60
    # The next update re-embeds only what was lost.
    fake = FakeEmbedder()
    with Index.open(copy, loader=lambda *a, **k: fake) as idx:
        report = idx.update()
    assert report.added == 60 - kept and report.unchanged == kept
    with Store.open(copy, create=False) as store:
        assert health.check(store) == [] and store.counts()["files"] == 60


def test_blocks_and_lexical_rows_out_of_step_are_found_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK", 4)
    _, db = fake_index(tmp_path)
    with Store.open(db, create=False) as store:
        assert store.conn.execute("SELECT count(*) FROM vec_blocks").fetchone()[0] > 1
        store.conn.execute(
            "UPDATE chunks SET slot = NULL WHERE id IN (SELECT id FROM chunks"
            " WHERE slot IS NOT NULL LIMIT 3)"
        )
        store.conn.execute("DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks LIMIT 2)")
        kinds = {p.kind: p.count for p in health.check(store)}
    assert kinds == {"packed chunks out of step with the blocks": 3, "lexical rows out of step": 2}
    health.repair(db)
    with Store.open(db, create=False) as store:
        assert health.check(store) == []


def test_cli_on_a_damaged_index_is_one_line_and_exit_2(tmp_path):
    _, copy = damaged_copy(tmp_path)
    # status and a no-op index run SQLite's quick check: they always see the damage.
    for args in (["status", "--db", copy], ["index", "--db", copy]):
        r = jinaloc(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "is damaged" in r.stderr and "jinaloc check" in r.stderr
    # Readers fail the moment they read a damaged page, in one line; else they work.
    for args in (
        ["search", "tomato", "--db", copy, "--mode", "lexical", "-k", "50", "--all-chunks"],
        ["cluster", "--db", copy, "--stored-vectors"],
        ["dedup", "--db", copy, "--stored-vectors"],
    ):
        r = jinaloc(*args)
        assert r.returncode in (0, 1, 2) and "Traceback" not in r.stderr, (args, r.stderr)
        if r.returncode == 2:
            assert len(r.stderr.strip().splitlines()) == 1 and "check" in r.stderr
    r = jinaloc("check", "--db", copy)
    assert r.returncode == 1 and "integrity" in r.stdout


def test_vacuum_shrinks_after_deletions(tmp_path):
    notes, db = fake_index(tmp_path, 200)
    for p in list(notes.rglob("*.md"))[:180]:
        p.unlink()
    with Index.open(db, loader=lambda *a, **k: FakeEmbedder()) as idx:
        idx.update()
    r = json.loads(cli("vacuum", "--db", db, "--json").stdout)
    assert r["bytes_after"] < r["bytes_before"]
    with Store.open(db, create=False) as store:
        assert health.check(store) == [] and store.counts()["files"] == 20


# --- read-only and unwritable places ------------------------------------------------------


def test_readers_write_nothing_and_work_where_nothing_can_be_written(tmp_path):
    _, db = fake_index(tmp_path)
    with Store.open(db, create=False) as store:
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(db, ro / "index.db")
    before = (ro / "index.db").read_bytes()
    # As on a read-only mount, SQLite cannot make the WAL's -shm file next to the index (a
    # folder in its place; root ignores permission bits, so they cannot show it).
    (ro / "index.db-shm").mkdir()
    with Store.open(ro / "index.db", create=False, readonly=True) as store:
        assert store.counts()["files"] == 12
        assert store.lexical("tomato", 5)
        with pytest.raises(Exception, match="readonly|read-only"):
            store.conn.execute("DELETE FROM files")
    assert (ro / "index.db").read_bytes() == before
    r = cli("search", "tomato", "--db", ro / "index.db", "--mode", "lexical", "--json")
    assert json.loads(r.stdout)
    assert json.loads(cli("status", "--db", ro / "index.db", "--json").stdout)["files"] == 12


def test_unwritable_index_places_are_one_line_errors(tmp_path):
    (tmp_path / "afile").write_text("x")
    for db in (tmp_path / "afile" / "index.db",):
        r = jinaloc("index", tmp_path, "--db", db)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "cannot create the index" in r.stderr


def test_a_failed_first_run_leaves_no_index_behind(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 2)
    db = tmp_path / "new.db"
    r = jinaloc("index", tmp_path / "missing", "--db", db)
    assert r.returncode == 2 and not db.exists()
    r = jinaloc("index", notes, "--db", db, "--model", tmp_path / "no-such-model")
    assert r.returncode == 2 and not db.exists(), r.stderr


# --- one writer at a time -----------------------------------------------------------------


def test_a_second_update_waits_or_refuses(tmp_path):
    notes, db = fake_index(tmp_path)
    (notes / "new.md").write_text("# New\n\nfresh words")
    holder = Index.open(db)
    with holder.writing():
        with Index.open(db) as other, pytest.raises(IndexBusy):
            other.update([notes], wait=False)
        # Readers are not blocked by the writer lock.
        with Index.open(db, readonly=True) as reader:
            assert reader.store.counts()["files"] == 12
        done = []

        def waiting():
            with Index.open(db, loader=lambda *a, **k: FakeEmbedder()) as other:
                done.append(other.update([notes]).added)

        t = threading.Thread(target=waiting)
        t.start()
        time.sleep(0.5)
        assert not done  # still waiting for the lock
    t.join(20)
    holder.close()
    assert done == [1]  # the work was done once, by the second run, after the first


# --- folders ------------------------------------------------------------------------------


def test_forget_drops_a_root_but_keeps_what_another_covers(tmp_path):
    notes, db = fake_index(tmp_path)
    sub = notes / "cooking"
    with Index.open(db, loader=lambda *a, **k: FakeEmbedder()) as idx:
        idx.update([sub])  # a nested root
        assert idx.forget(sub) == 0  # the parent root still covers its files
        assert set(idx.store.roots()) == {str(notes)}
        removed = idx.forget(notes)
        assert removed == 12 and idx.store.counts()["files"] == 0 and idx.store.roots() == {}
        with pytest.raises(JinalocError, match="not an indexed folder"):
            idx.forget(tmp_path / "elsewhere")


def test_nested_root_with_its_own_options_does_not_remove_the_parents_files(tmp_path):
    notes, db = fake_index(tmp_path)
    fake = FakeEmbedder()
    with Index.open(db, loader=lambda *a, **k: fake) as idx:
        report = idx.update([(notes / "cooking", WalkOptions(exclude=["*"]))])
        assert report.removed == 0 and idx.store.counts()["files"] == 12
        again = idx.update()  # both roots: nothing to re-embed
    assert (again.added, again.removed, again.updated) == (0, 0, 0) and fake.calls == []


def test_cli_forget(tmp_path):
    notes, db = fake_index(tmp_path)
    r = cli("forget", notes, "--db", db, "--json")
    assert json.loads(r.stdout) == {"forgotten": str(notes), "files_removed": 12}


# --- terminal manners ---------------------------------------------------------------------


def test_usage_errors_are_one_line_when_piped():
    r = jinaloc("search", "--no-such-flag", "x")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "No such option: --no-such-flag" in r.stderr and "╭" not in r.stderr


@needs_gguf
def test_a_closed_pipe_ends_quietly_and_data_shows_no_emoji(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(30):
        # The query word in a third of the notes: one in most of them ranks nothing (lexical.py).
        words = "some words" if i % 3 == 0 else "other text"
        (notes / f"note:x:{i}.md").write_text(f"# Note :x: {i}\n\n{words} :smile: here\n")
    db = tmp_path / "i.db"
    assert jinaloc("index", notes, "--db", db, "-q", *MODEL).returncode == 0
    shell = f"{sys.executable} -m jinaloc search words --db {db} -k 30 --mode lexical | head -1"
    r = subprocess.run(
        shell,
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0 and r.stderr == "" and r.stdout.count("\n") == 1
    assert ":x:" in r.stdout and "❌" not in r.stdout
    # On a terminal too: the CLI's own console prints paths and snippets as they are.
    import io

    from jinaloc.cli import common
    from jinaloc.cli.index import _hit_tty

    screen = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(common.out_console, "_file", screen)  # restored to None (sys.stdout) after
        _hit_tty(
            {
                "path": "note:x:y.md",
                "start_line": 1,
                "score": 0.5,
                "heading": ":smile:",
                "title": "",
                "text": "a :x: b",
            }
        )
    assert "note:x:y.md" in screen.getvalue() and ":smile:" in screen.getvalue()
    assert "❌" not in screen.getvalue()


@needs_gguf
def test_bad_utf8_on_stdin_names_its_line():
    r = CliRunner().invoke(app, ["embed", *MODEL], input=b"fine\n\xff\xfe bad\nlater\n")
    assert r.exit_code == 2 and "stdin line 2: not valid UTF-8" in r.stderr


def test_an_empty_folder_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    r = jinaloc("index", tmp_path / "empty", "--db", tmp_path / "i.db")
    assert r.returncode == 0 and "no notes found to index" in r.stderr


def test_deleted_notes_and_gone_folders_never_come_back_in_results(tmp_path):
    notes, db = fake_index(tmp_path, 20)
    fake = FakeEmbedder()
    gone = sorted(notes.rglob("*.md"))[:15]
    for p in gone:
        p.unlink()  # deleted since the last update
    with Index.open(db, readonly=True, loader=lambda *a, **k: fake) as idx:
        for mode in ("hybrid", "semantic", "lexical"):
            hits = idx.search("tomato basil passport tax python", 5, mode=mode)
            assert hits and all(Path(h.path).exists() for h in hits), mode
            assert len(hits) == 5
    shutil.rmtree(notes)
    r = jinaloc("index", "--db", db)
    assert r.returncode == 2 and "is gone (20 files indexed from it" in r.stderr
    assert "jinaloc forget" in r.stderr


def test_search_files_null_separated_for_names_with_newlines(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "two\nlines.md").write_text("# Odd name\n\npassport and tickets\n")
    (notes / "plain.md").write_text("# Plain\n\npassport office hours\n")
    db = tmp_path / "i.db"
    with Index.open(db, create=True, loader=lambda *a, **k: FakeEmbedder()) as idx:
        idx.update([notes])
    r = cli("search", "passport", "--db", db, "--mode", "lexical", "--files", "-0")
    paths = r.stdout.split("\0")
    assert paths[-1] == "" and sorted(Path(p).name for p in paths[:-1]) == [
        "plain.md",
        "two\nlines.md",
    ]
    r = cli("search", "passport", "--db", db, "--mode", "lexical", "-0", ok=(2,))
    assert "-0/--null goes with --files" in r.stderr


def test_default_threads_leave_busy_cores_out(monkeypatch):
    from jinaloc.backends import threads

    monkeypatch.delenv("JINALOC_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(threads, "_physical_cores", lambda: 4)
    for load, want in ((0.2, 4), (1.4, 3), (3.9, 1), (12.0, 1)):
        monkeypatch.setattr(threads.os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert threads.default_threads() == want
    monkeypatch.setenv("JINALOC_THREADS", "2")
    assert threads.default_threads() == 2
    monkeypatch.setenv("JINALOC_THREADS", "many")
    with pytest.raises(JinalocError, match="positive integer"):
        threads.default_threads()


@needs_gguf
def test_threads_option_reaches_the_backend(monkeypatch):
    monkeypatch.delenv("JINALOC_THREADS", raising=False)
    seen = []
    from jinaloc.backends import gguf

    real = gguf.GGUFBackend.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append(self.threads)

    monkeypatch.setattr(gguf.GGUFBackend, "__init__", spy)
    r = CliRunner().invoke(app, ["embed", "--threads", "3", *MODEL, "hello"])
    assert r.exit_code == 0, r.stderr
    assert seen == [3]
    monkeypatch.delenv("JINALOC_THREADS", raising=False)


def test_status_counts_a_file_root(tmp_path):
    note = tmp_path / "one.md"
    note.write_text("# One\n\nwords")
    db = tmp_path / "i.db"
    with Index.open(db, create=True, loader=lambda *a, **k: FakeEmbedder()) as idx:
        idx.update([note])
        assert [r["files"] for r in idx.status()["roots"]] == [1]


@needs_gguf
def test_models_add_registers_a_local_model_for_offline_use(tmp_path):
    from conftest import FIXTURES

    copy = tmp_path / "usb" / "my-nano"
    shutil.copytree(FIXTURES / "tiny-v5-nano", copy)
    r = cli("models", "add", copy)
    assert r.stdout.strip() == "my-nano"
    out = cli("embed", "--model", "my-nano", "--backend", "gguf", "--quant", "F32", "--offline",
              "hi").stdout  # fmt: skip
    assert len(json.loads(out)["embedding"]) == 64
    r = cli("models", "add", copy, ok=(2,))
    assert "known already" in r.stderr
    reranker = ROOT / "tests/fixtures/tiny-qwen3-reranker/gguf/tiny-qwen3-reranker-F32.gguf"
    assert cli("models", "add", reranker, "--name", "tiny-rr").stdout.strip() == "tiny-rr"
    listed = json.loads(cli("models", "list", "--json").stdout)
    names = {m["name"]: m for m in listed} if isinstance(listed, list) else listed
    assert "tiny-rr" in names and "my-nano" in names
    r = cli("models", "add", tmp_path / "nothing-here", ok=(2,))
    assert "not found" in r.stderr or "not a model" in r.stderr


def test_an_unreachable_hub_fails_fast_in_one_line(monkeypatch):
    from jinaloc import hub
    from jinaloc.registry import resolve

    monkeypatch.setattr(hub, "_hub_ok", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(JinalocError, match="cannot reach the model hub at 127.0.0.1") as e:
        hub.gguf_file(resolve("v5-nano"), "retrieval", "Q8_0")
    assert time.monotonic() - start < 10 and "models add" in str(e.value)


@needs_gguf
def test_read_files_null_separated_names_with_newlines(tmp_path):
    odd = tmp_path / "two\nlines.md"
    odd.write_text("# Trip\n\ntrain to Kyoto\n")
    plain = tmp_path / "plain.md"
    plain.write_text("# Bread\n\nflour and water\n")
    stdin = f"{odd}\0{plain}\0".encode()
    r = CliRunner().invoke(app, ["rerank", "--read-files", "-0", "kyoto", "--jsonl", *MODEL],
                           input=stdin)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    paths = {json.loads(line)["path"] for line in r.stdout.splitlines()}
    assert paths == {str(odd), str(plain)}
    # Without -0 the same bytes are not two paths.
    r = CliRunner().invoke(app, ["rerank", "--read-files", "kyoto", *MODEL], input=stdin)
    assert r.exit_code == 2


def test_a_symlinked_folder_inside_a_root_is_indexed_once(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 5)
    (notes / "again").symlink_to(notes / "cooking")
    db = tmp_path / "i.db"
    with Index.open(db, create=True, loader=lambda *a, **k: FakeEmbedder()) as idx:
        report = idx.update([notes])
        assert idx.store.counts()["files"] == 5
    reasons = [why for _, why in report.skipped]
    assert reasons and all(why.startswith("same file as ") for why in reasons)


def test_split_tables_repeat_their_header_and_rules_alone_are_not_chunks():
    from jinaloc.chunking import chunk_text

    def words(texts):
        return [len(t.split()) for t in texts]

    rows = "".join(f"| row{i} a b c | v{i} d e f |\n" for i in range(40))
    # (A header is repeated when it takes at most 1/8 of the budget: 6 of 60 tokens.)
    doc = chunk_text("# T\n\n| name | value |\n|---|---|\n" + rows, "t.md", words, 60)
    assert len(doc.chunks) > 2
    for chunk, embedded in zip(doc.chunks[1:], doc.embed_texts()[1:], strict=True):
        assert "| name | value |\n|---|---|" in embedded  # embedded with its header
        assert not chunk.text.startswith("| name")  # stored as it is in the file
    doc = chunk_text("# A\n\n" + "w " * 27 + "\n\n---\n", "r.md", words, 30)
    assert all(c.text.strip() != "---" for c in doc.chunks)


def test_unreadable_files_are_not_read_again_until_they_change(tmp_path, monkeypatch):
    notes, db = fake_index(tmp_path, 3)
    bad = notes / "blob.md"
    bad.write_bytes(b"\0\1\2" * 100)
    fake = FakeEmbedder()
    with Index.open(db, loader=lambda *a, **k: fake) as idx:
        first = idx.update()
        assert first.skipped == [(str(bad), "binary file")] and not first.known_skips
        import jinaloc.index.plan as planner

        reads = []
        real = planner.read_bytes
        monkeypatch.setattr(planner, "read_bytes", lambda p, m: reads.append(p) or real(p, m))
        second = idx.update()
        assert second.known_skips == {str(bad)} and reads == []  # not read again
        assert second.to_json()["skipped_before"] == 1
        bad.write_text("# Fixed\n\nnow it is text\n")
        third = idx.update()
        assert third.added == 1 and not third.skipped
        assert idx.store.skips() == {}


# The child says when the console script has imported `main` (the launcher's own code), so
# the signal lands in main()'s start-up: a loaded machine can take longer than any delay here
# just to import `site`, and Python prints a traceback for a Ctrl-C there, before our code.
START = (
    "import sys; from jinaloc.entry import main; print(flush=True); sys.argv[0] = 'jinaloc'; main()"
)


def test_ctrl_c_during_start_up_is_quiet():
    import signal as signals

    for delay in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4):
        proc = subprocess.Popen(
            [sys.executable, "-c", START, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout.readline() == "\n"
        time.sleep(delay)
        proc.send_signal(signals.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert "Traceback" not in err, (delay, err)
        # -SIGINT: the signal came while Python was shutting down, after it had put the
        # default action back (quiet too; the shell shows 130).
        assert proc.returncode in (0, 130, -signals.SIGINT), (delay, proc.returncode, err)


REDIM = """
import sys
from jinaloc.index.store import Store
store = Store.open(sys.argv[1], create=False)
print("start", flush=True)
store.redim(int(sys.argv[2]))
print("done", flush=True)
"""


def test_a_redim_killed_midway_leaves_the_old_dim_whole(tmp_path):
    import numpy as np

    from jinaloc.index.store import NewChunk
    from jinaloc.vectors import l2_normalize

    db = tmp_path / "big.db"
    rng = np.random.default_rng(0)
    with Store.open(db) as store:
        store.set_meta({"model": "m", "dim": 96, "full_dim": 128})
        for f in range(40):
            vectors = l2_normalize(rng.standard_normal((1000, 128)))
            chunks = [NewChunk(i, i, [], "t", 1, f"{f}-{i}", v) for i, v in enumerate(vectors)]
            store.write_file(f"/r/{f}", "/r", str(f), str(f), 1, 1, "t", chunks)
    outcomes = set()
    for delay in (0.05, 0.2, 0.5, 1.0):
        proc = subprocess.Popen(
            [sys.executable, "-c", REDIM, str(db), "64" if delay != 1.0 else "32"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout.readline() == "start\n"
        time.sleep(delay)
        proc.kill()  # SIGKILL: no handler runs
        finished = proc.communicate()[0] == "done\n"
        with Store.open(db, create=False) as store:
            assert health.check(store) == [], delay
            outcomes.add((finished, store.dim))
            assert store.dim in (96, 64, 32)
            assert store.counts()["chunks"] == 40_000
            assert len(store.exact(np.ones(store.dim, np.float32), 5, False)) == 5
    assert any(not finished for finished, _ in outcomes)  # at least one was cut midway

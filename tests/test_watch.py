"""`jinaloc watch` with real file events: every save pattern ends as a fresh `index` would.

In-process watchers (a thread, the model-free FakeEmbedder) for the save patterns; the CLI
as a subprocess on the tiny nano GGUF fixture for signals, kill -9, status and idle CPU."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, model_dir
from index_helpers import FakeEmbedder, have_gguf, make_notes

from jinaloc.index import Index, health
from jinaloc.index.store import Store
from jinaloc.records import read_watcher, watcher_path
from jinaloc.walk import Candidate, Walker, WalkOptions
from jinaloc.watch import Watcher

WAIT = 20.0  # seconds any change may take to show up in the index


class Loader:
    def __init__(self, embedder=None):
        self.embedder = embedder or FakeEmbedder()
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.embedder


def snapshot(db: Path) -> tuple:
    """What an index holds, without ids or times: files, their chunks, and consistency."""
    with Store.open(db, create=False) as store:
        c = store.conn
        c.execute("BEGIN")  # one read snapshot: a watcher may commit in between
        files = sorted(c.execute("SELECT path, root, rel, hash, title FROM files"))
        chunks = sorted(
            c.execute(
                "SELECT f.path, c.seq, c.start_line, c.end_line, c.heading, c.text, c.hash"
                " FROM chunks c JOIN files f ON f.id = c.file_id"
            )
        )
        problems = health.check(store)  # blocks and chunks agree too, in this snapshot
        c.execute("COMMIT")
    assert problems == []
    return files, chunks


def fresh(folder: Path, tmp: Path, options: WalkOptions | None = None) -> tuple:
    """The snapshot of a fresh index of `folder`."""
    n = len(list(tmp.glob("fresh-*.db")))
    db = tmp / f"fresh-{n}.db"
    with Index(Store.open(db), Loader()) as idx:
        idx.update([(folder, options or WalkOptions())])
    return snapshot(db)


def until(condition, timeout: float = WAIT):
    """Poll `condition` until it holds (returns its last value either way)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


class Watched:
    """A notes folder, its index, and a Watcher thread keeping it fresh."""

    def __init__(
        self,
        tmp: Path,
        notes: int = 20,
        db: Path | None = None,
        prebuilt: bool = False,
        embedder=None,
        **kw,
    ):
        self.tmp = tmp
        self.notes = tmp / "notes"
        make_notes(self.notes, notes, paragraphs=2, words=10)
        self.db = db or tmp / "index.db"
        if prebuilt:  # indexed before the watcher starts, with another loader
            with Index(Store.open(self.db), Loader()) as idx:
                idx.update([self.notes])
        self.loader = Loader(embedder)
        self.index = Index(Store.open(self.db), self.loader)
        self.batches = []
        self.caught_up = threading.Event()
        self.stop = threading.Event()
        self.watcher = Watcher(
            self.index,
            [self.notes],
            debounce_ms=100,
            check_ms=300,
            on_batch=self._batch,
            **kw,
        )
        self.error = None
        self.closed = False
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        assert self.caught_up.wait(WAIT)

    def _batch(self, batch):
        self.batches.append(batch)
        if batch.catch_up:
            self.caught_up.set()

    def _run(self):
        try:
            self.watcher.run(self.stop)
        except BaseException as e:  # shown by the test, not lost in the thread
            self.error = e
            self.caught_up.set()

    def embedded(self) -> int:
        return len(self.loader.embedder.embedded)

    def converges(self, folder: Path | None = None, timeout: float = WAIT) -> tuple:
        """Wait until the watched index equals a fresh index of the folder; return it.
        (The batch's on_batch call may come a moment after its last commit.)"""
        expected = fresh(folder or self.notes, self.tmp)
        got = until(lambda: snapshot(self.db) == expected or None, timeout)
        assert self.error is None
        if got is None:
            assert snapshot(self.db) == expected
        return expected

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.stop.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        self.index.close()
        assert self.error is None, self.error


@pytest.fixture
def watched(tmp_path):
    w = Watched(tmp_path)
    yield w
    w.close()


def paths_of(state: tuple) -> list[str]:
    return [row[2] for row in state[0]]


def test_create_edit_delete(watched):
    notes = watched.notes
    before = snapshot(watched.db)
    (notes / "new.md").write_text("# New\n\nfresh words about a tomato garden\n")
    after = watched.converges()
    assert "new.md" in paths_of(after) and after != before
    (notes / "new.md").write_text("# New\n\nthe same note, edited: bread and flour\n")
    edited = watched.converges()
    assert edited != after
    # Only the touched path was planned, not the whole root.
    assert until(lambda: watched.batches[-1].scope == {str(notes.resolve()): ["new.md"]})
    (notes / "new.md").unlink()
    assert watched.converges() == before


def test_atomic_saves_and_editor_files(watched):
    """VS Code / Obsidian style (write a temporary, rename over) and vim's dance (4913 probe,
    backup by rename, swap file) all end as a fresh index: no temporary is indexed."""
    note = watched.notes / "cooking" / "note-0000.md"
    before = snapshot(watched.db)
    tmp = note.with_name("note-0000.md.tmp")
    tmp.write_text("# Cooking\n\natomically saved: garlic oven dough\n")
    os.replace(tmp, note)
    saved = watched.converges()
    assert saved != before
    # vim: swap file while editing, probe file, original renamed to a backup, new file written.
    swap = note.with_name(".note-0000.md.swp")
    swap.write_bytes(b"\0swap")
    probe = note.with_name("4913")
    probe.write_text("")
    probe.unlink()
    backup = note.with_name("note-0000.md~")
    os.rename(note, backup)
    note.write_text("# Cooking\n\nwritten by vim: basil and salt\n")
    vim = watched.converges()
    assert vim != saved
    assert not [p for p in paths_of(vim) if p.endswith(("~", ".swp", "4913", ".tmp"))]
    backup.unlink()
    swap.unlink()
    assert watched.converges() == vim


def test_renames_and_moves_reuse_the_vectors(watched):
    notes = watched.notes
    embedded = watched.embedded()
    os.rename(notes / "travel" / "note-0001.md", notes / "travel" / "renamed.md")
    moved = watched.converges()
    assert "travel/renamed.md" in paths_of(moved)
    (notes / "archive").mkdir()
    os.rename(notes / "finance" / "note-0002.md", notes / "archive" / "note-0002.md")
    assert "archive/note-0002.md" in paths_of(watched.converges())
    os.rename(notes / "garden", notes / "yard")  # a folder moved
    state = watched.converges()
    assert any(p.startswith("yard/") for p in paths_of(state))
    assert not any(p.startswith("garden/") for p in paths_of(state))
    assert watched.embedded() == embedded  # nothing re-embedded
    assert until(lambda: sum(len(b.report.renamed) for b in watched.batches) >= 6)


def test_moves_and_deletions_never_load_the_model(tmp_path):
    w = Watched(tmp_path, prebuilt=True)
    try:
        os.rename(w.notes / "travel" / "note-0001.md", w.notes / "note-0001.md")
        os.rename(w.notes / "garden", w.notes / "yard")
        (w.notes / "cooking" / "note-0000.md").unlink()
        shutil.rmtree(w.notes / "coding")
        w.converges()
        assert w.loader.calls == 0
        (w.notes / "new.md").write_text("# New\n\nthis one needs the model\n")
        w.converges()
        assert w.loader.calls == 1
    finally:
        w.close()


def test_folder_removed_or_moved_out(watched, tmp_path):
    notes = watched.notes
    shutil.rmtree(notes / "coding")
    state = watched.converges()
    assert not any(p.startswith("coding/") for p in paths_of(state))
    shutil.move(str(notes / "travel"), str(tmp_path / "travel-out"))
    state = watched.converges()
    assert not any(p.startswith("travel/") for p in paths_of(state))
    shutil.move(str(tmp_path / "travel-out"), str(notes / "trips"))
    assert any(p.startswith("trips/") for p in paths_of(watched.converges()))


def test_a_burst_of_500_files_in_few_batches(watched):
    burst = watched.notes / "burst"
    burst.mkdir()
    for i in range(500):
        (burst / f"b{i:03d}.md").write_text(f"# Burst {i}\n\nline {i} of a git checkout\n")
    state = watched.converges(timeout=60)
    assert sum(p.startswith("burst/") for p in paths_of(state)) == 500
    # Debounced: a few groups, not one update per file.
    assert len([b for b in watched.batches if not b.catch_up]) < 20
    shutil.rmtree(burst)
    state = watched.converges(timeout=60)
    assert not any(p.startswith("burst/") for p in paths_of(state))


class SlowEmbedder(FakeEmbedder):
    def embed_with_counts(self, *args, **kwargs):
        time.sleep(0.2)
        return super().embed_with_counts(*args, **kwargs)


def file_count(db: Path) -> int:
    with Store.open(db, create=False) as store:
        return store.counts()["files"]


def test_stop_lands_between_files_and_a_new_watcher_catches_up(tmp_path):
    watched = Watched(tmp_path, embedder=SlowEmbedder())
    burst = watched.notes / "burst"
    burst.mkdir()
    for i in range(300):
        (burst / f"b{i:03d}.md").write_text(f"# Burst {i}\n\nline {i}\n")
    assert until(lambda: file_count(watched.db) > 20 or None)
    watched.close()  # joins the thread within WAIT seconds
    written = file_count(watched.db)
    assert 20 < written < 320  # stopped part way, after whole files
    snapshot(watched.db)  # consistent: every chunk has its bits
    w = Watched(watched.tmp)  # same folder, notes rewritten as they were, same index
    try:
        state = w.converges(timeout=60)
        assert sum(p.startswith("burst/") for p in paths_of(state)) == 300
    finally:
        w.close()


def test_many_touched_paths_plan_the_whole_root(watched, monkeypatch):
    monkeypatch.setattr("jinaloc.watch.MAX_SCOPED", 10)
    for i in range(30):
        (watched.notes / f"top-{i:02d}.md").write_text(f"# Top {i}\n\nat the root\n")
    watched.converges()
    whole = {str(watched.notes.resolve()): None}
    assert until(lambda: whole in [b.scope for b in watched.batches if not b.catch_up])


def test_ignore_files_and_skip_reasons(watched):
    notes = watched.notes
    (notes / ".jinalocignore").write_text("cooking/\n")
    state = watched.converges()
    assert not any(p.startswith("cooking/") for p in paths_of(state))
    (notes / "travel" / ".gitignore").write_text("note-0001.md\n")
    state = watched.converges()
    assert "travel/note-0001.md" not in paths_of(state)
    (notes / ".jinalocignore").unlink()
    assert any(p.startswith("cooking/") for p in paths_of(watched.converges()))
    (notes / "blob.md").write_bytes(b"\0\1\2binary")
    (notes / "big.md").write_text("word " * 300_000)
    (notes / ".hidden.md").write_text("# hidden\n")

    def skipped():
        return {Path(p).name: r for b in watched.batches for p, r in b.report.skipped}

    assert until(lambda: {"blob.md", "big.md"} <= skipped().keys())
    skipped = skipped()
    assert skipped["blob.md"] == "binary file"
    assert skipped["big.md"].startswith("too large")
    assert ".hidden.md" not in skipped


def test_a_root_that_disappears_and_comes_back(watched, tmp_path):
    notes = watched.notes
    kept = snapshot(watched.db)
    away = tmp_path / "away"
    os.rename(notes, away)
    time.sleep(1.0)  # more than a check: the watcher has seen it go
    assert snapshot(watched.db) == kept  # kept as `index` keeps a missing root
    (away / "cooking" / "note-0000.md").write_text("# Changed\n\nwhile the root was away\n")
    (away / "back.md").write_text("# Back\n\nadded while away\n")
    os.rename(away, notes)
    state = watched.converges()
    assert "back.md" in paths_of(state)
    # Away and back within one debounce period, then an edit: still watched.
    os.rename(notes, away)
    (away / "quick.md").write_text("# Quick\n\naway and back at once\n")
    os.rename(away, notes)
    assert "quick.md" in paths_of(watched.converges())
    (notes / "quick.md").write_text("# Quick\n\nedited once back\n")
    watched.converges()
    # A root replaced by another folder of the same name is caught up in full.
    shutil.rmtree(notes)
    make_notes(notes, 5, seed=7, paragraphs=1, words=8)
    assert len(paths_of(watched.converges())) == 5


def test_roots_added_by_index_meanwhile_are_watched_too(tmp_path):
    """With no roots given, a watcher follows the index's roots, also ones added later."""
    notes, other, db = tmp_path / "notes", tmp_path / "other", tmp_path / "index.db"
    make_notes(notes, 3)
    make_notes(other, 3, seed=1)
    with Index(Store.open(db), Loader()) as idx:
        idx.update([notes])
    loader = Loader()
    index = Index(Store.open(db), loader)
    stop = threading.Event()
    thread = threading.Thread(
        target=Watcher(index, debounce_ms=50, check_ms=200, record=False).run, args=(stop,)
    )
    thread.start()
    try:
        with Index(Store.open(db), Loader()) as idx:  # `jinaloc index ~/other` meanwhile
            idx.update([other])
        time.sleep(1.0)  # a few checks: the new root is watched now
        (other / "late.md").write_text("# Late\n\nin the root added later\n")
        (notes / "late.md").write_text("# Late\n\nin the first root\n")
        late = [str(other.resolve() / "late.md"), str(notes.resolve() / "late.md")]
        assert until(lambda: all(p in [f[0] for f in snapshot(db)[0]] for p in late) or None)
    finally:
        stop.set()
        thread.join(WAIT)
        index.close()
    assert not thread.is_alive()


def test_db_inside_the_root_does_not_feed_itself(tmp_path):
    w = Watched(tmp_path, db=tmp_path / "notes" / "index.db")
    try:
        (w.notes / "one.md").write_text("# One\n\na change that writes the index\n")
        w.converges()
        assert until(lambda: len(w.batches) == 2)  # the catch-up, then one.md
        count = len(w.batches)
        time.sleep(1.5)  # its own writes to index.db / -wal must not start batches
        assert len(w.batches) == count
        assert "index.db" not in paths_of(snapshot(w.db))
    finally:
        w.close()


def test_a_watcher_thread_on_a_session_shares_the_served_model(tmp_path):
    """`serve --watch`: the server's index searches while a Watcher thread writes through a
    session of it on its own connection; the one model loads once and outlives the session."""
    notes, db = tmp_path / "notes", tmp_path / "index.db"
    make_notes(notes, 10, paragraphs=1, words=8)
    loader = Loader()
    with Index(Store.open(db), loader) as served:
        served.update([notes])
        session = served.session()
        stop = threading.Event()
        thread = threading.Thread(
            target=Watcher(session, debounce_ms=50, check_ms=300, record=False).run, args=(stop,)
        )
        thread.start()
        time.sleep(0.5)
        (notes / "zebra.md").write_text("# Zebra\n\nzebra giraffe savanna\n")
        found = until(
            lambda: [h for h in served.search("zebra giraffe savanna", k=3) if "zebra" in h.path]
        )
        assert found and found[0].rel == "zebra.md"
        stop.set()
        thread.join(WAIT)
        assert not thread.is_alive()
        session.close()
        assert loader.calls == 1
        assert served.search("zebra", k=1)  # the model is still the server's


def test_record_and_status_while_running(watched):
    rec = read_watcher(watched.db)
    # The catch-up indexed the 20 notes: one applied batch.
    assert rec["pid"] == os.getpid() and rec["batches"] == 1 and rec["last_applied"]
    assert watched.index.status()["watcher"]["pid"] == os.getpid()
    (watched.notes / "x.md").write_text("# X\n\nrecorded\n")
    watched.converges()
    rec = until(lambda: read_watcher(watched.db)["batches"] == 2 and read_watcher(watched.db))
    assert rec and rec["db"] == str(watched.db.resolve())
    watched.close()
    assert read_watcher(watched.db) is None and not watcher_path(watched.db).exists()


def test_a_stale_record_is_not_a_running_watcher(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = watcher_path(tmp_path / "index.db")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": dead.pid, "db": "x", "started": "", "batches": 0}))
    assert read_watcher(tmp_path / "index.db") is None


def test_scoped_walk_equals_the_full_walk_below_each_path(tmp_path):
    """Walker.walk(root, only=[rel]) yields what a full walk yields at or under rel."""
    files = {
        ".gitignore": "*.log\nbuild/\n",
        "a.md": "a",
        "x.log": "x",
        "build/b.md": "b",
        "sub/.jinalocignore": "deep/\n",
        "sub/c.md": "c",
        "sub/deep/d.md": "d",
        "sub/more/e.md": "e",
        "sub/more/e.md~": "backup",
        ".hidden/f.md": "f",
        "g.md": "g" * 3000,
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    walker = Walker(exclude=["*.txt"], max_size=2000)
    full = list(walker.walk(tmp_path))

    def rel_of(item):
        return item.rel if isinstance(item, Candidate) else str(item.path.relative_to(tmp_path))

    for rel in sorted({*files, "sub", "sub/more", "build", "sub/deep", "gone.md", "nope/x"}):
        want = [i for i in full if rel_of(i) == rel or rel_of(i).startswith(rel + "/")]
        assert list(walker.walk(tmp_path, only=[rel])) == want, rel
    assert list(walker.walk(tmp_path, only=["sub", "sub/c.md", "a.md"])) == [
        i for i in full if rel_of(i) in ("a.md", "sub/c.md", "sub/more/e.md")
    ]


def test_cli_refuses_a_missing_path_and_an_index_without_roots(tmp_path):
    from typer.testing import CliRunner

    from jinaloc.cli import app

    db = str(tmp_path / "i.db")
    result = CliRunner().invoke(app, ["watch", str(tmp_path / "nope"), "--db", db])
    assert result.exit_code == 2 and "nope: no such file or folder" in result.stderr
    result = CliRunner().invoke(app, ["watch", "--db", db])
    assert result.exit_code == 2 and "nothing to watch" in result.stderr
    assert not watcher_path(tmp_path / "i.db").exists()


# The CLI as a real process: signals, kill -9, status, idle CPU.

MODEL = ["--model", str(model_dir("nano")), "--backend", "gguf", "--quant", "F32"]
needs_gguf = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")


def jinaloc(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "jinaloc", *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        **kw,
    )


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


class WatchProcess:
    """`jinaloc watch --json` as a subprocess; its JSON lines read with a deadline."""

    def __init__(self, notes: Path, db: Path):
        args = [sys.executable, "-m", "jinaloc", "watch", notes, "--db", db, *MODEL]
        self.proc = subprocess.Popen(
            [*map(str, args), "--debounce", "100", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.first = self.next()  # the catch-up

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next(self) -> dict:
        try:
            line = self.lines.get(timeout=60)
        except queue.Empty:
            line = None
        if line is None:
            self.proc.kill()
            raise AssertionError(f"no JSON line from watch: {self.proc.stderr.read()}")
        return json.loads(line)

    def stop(self, sig=signal.SIGTERM) -> tuple[int, str]:
        """Send `sig`, wait for the exit; (exit code, stderr)."""
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(WAIT)
        finally:
            self.proc.kill()
        return code, self.proc.stderr.read()

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fresh_cli(notes: Path, tmp: Path) -> tuple:
    db = tmp / "fresh-cli.db"
    db.unlink(missing_ok=True)
    assert jinaloc("index", notes, "--db", db, *MODEL, "-q").returncode == 0
    return snapshot(db)


@needs_gguf
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_cli_watch_edit_status_idle_cpu_and_sigterm(tmp_path):
    notes, db = tmp_path / "notes", tmp_path / "index.db"
    make_notes(notes, 12, paragraphs=1, words=8)
    w = WatchProcess(notes, db)
    try:
        assert w.first["catch_up"] and w.first["added"] == 12
        (notes / "cooking" / "note-0000.md").write_text("# Edited\n\nsearchable right away\n")
        batch = w.next()
        assert (batch["catch_up"], batch["updated"]) == (False, 1)
        assert snapshot(db) == fresh_cli(notes, tmp_path)
        status = json.loads(jinaloc("status", "--db", db, "--json").stdout)
        assert status["watcher"]["pid"] == w.pid
        assert status["watcher"]["last_applied"] and status["watcher"]["batches"] == 2
        assert "running (pid" in jinaloc("status", "--db", db).stdout
        second = jinaloc("watch", notes, "--db", db, *MODEL)
        assert second.returncode == 2 and f"a watcher (pid {w.pid})" in second.stderr
        # Idle: native events, no spinning loop.
        time.sleep(1.0)
        before = cpu_seconds(w.pid)
        time.sleep(10.0)
        idle = cpu_seconds(w.pid) - before
        assert idle < 0.5, idle
    finally:
        code, err = w.stop()
    assert code == 0, err
    assert "caught up: 12 added" in err and "events: 1 updated" in err
    assert "stopped: 2 batches applied" in err
    assert not watcher_path(db).exists()
    assert "not running" in jinaloc("status", "--db", db).stdout


@needs_gguf
def test_cli_kill_9_then_watch_or_index_catches_up(tmp_path):
    notes, db = tmp_path / "notes", tmp_path / "index.db"
    make_notes(notes, 10, paragraphs=1, words=8)
    WatchProcess(notes, db).kill9()
    assert watcher_path(db).exists()  # left behind, but seen as stale
    assert json.loads(jinaloc("status", "--db", db, "--json").stdout)["watcher"] is None
    # Changes while nothing watches.
    (notes / "travel" / "note-0001.md").unlink()
    os.rename(notes / "coding" / "note-0004.md", notes / "coding" / "moved.md")
    (notes / "late.md").write_text("# Late\n\nwritten while the watcher was dead\n")
    w = WatchProcess(notes, db)
    try:
        assert w.first["catch_up"]
        assert (w.first["added"], w.first["removed"], w.first["renamed"]) == (1, 1, 1)
        assert snapshot(db) == fresh_cli(notes, tmp_path)
    finally:
        code, _ = w.stop(signal.SIGINT)  # Ctrl-C: a clean stop too
    assert code == 0
    # And `index` recovers the same way after a kill -9.
    WatchProcess(notes, db).kill9()
    (notes / "late.md").write_text("# Late\n\nedited after the second kill\n")
    assert jinaloc("index", "--db", db, *MODEL, "-q").returncode == 0
    assert snapshot(db) == fresh_cli(notes, tmp_path)

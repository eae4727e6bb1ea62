"""Any file name and any text: names that are not UTF-8 stored byte for byte and shown
escaped, queries and inputs with lone surrogates, control characters or FTS5 syntax never
a traceback; confinement: symlinks leading out of an indexed folder, FIFOs, sockets and
devices are never read (docs/reliability.md "File names, text and confinement")."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, model_dir
from index_helpers import FakeEmbedder, have_gguf, make_notes
from typer.testing import CliRunner
from watchfiles._rust_notify import RustNotify

from jinaloc.cli import app
from jinaloc.errors import JinalocError
from jinaloc.index import Index
from jinaloc.index.store import Store
from jinaloc.output import shown
from jinaloc.reader import read_input
from jinaloc.server.mcp_app import read_lines
from jinaloc.walk import Walker, WalkOptions

MODEL = ["--model", str(model_dir("nano")), "--backend", "gguf", "--quant", "F32"]
needs_gguf = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
BAD = os.fsdecode(b"bad\xffname.md")  # 'bad\udcffname.md'


def fake() -> FakeEmbedder:
    return FakeEmbedder()


def run(*args, timeout: float = 60, input: bytes | None = None) -> subprocess.CompletedProcess:
    """The real command, bytes in and out (argv may hold any bytes, as a shell passes)."""
    return subprocess.run(
        [sys.executable, "-m", "jinaloc", *(os.fsencode(str(a)) for a in args)],
        input=input,
        capture_output=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def odd_notes(tmp_path: Path) -> Path:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / BAD).write_text("# Odd\n\npassport renewal at the office\n")
    (notes / "esc\x1b[31mred\nline.md").write_text("# Esc\n\npassport photos\n")
    (notes / "zz-after.md").write_text("# After\n\nzebra passport crossing\n")
    return notes


# --- names that are not UTF-8 ---------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_indexed_searched_and_kept_byte_for_byte(tmp_path):
    notes = odd_notes(tmp_path)
    db = tmp_path / "i.db"
    with Index.open(db, create=True, loader=lambda *a, **k: fake()) as idx:
        report = idx.update([notes])
        assert report.added == 3 and report.skipped == []  # files after it too
        bad = str(notes.resolve() / BAD)
        record = idx.store.file(bad)
        assert record is not None and record.rel == BAD
        assert os.fsencode(record.path) == os.fsencode(notes.resolve()) + b"/bad\xffname.md"
        for mode in ("lexical", "hybrid", "semantic"):
            hits = idx.search("passport renewal office", 3, mode=mode)
            assert bad in [h.path for h in hits], mode
        # Unchanged on the next run; a rename is a move; a removal removes it.
        assert idx.update([notes]).unchanged == 3
        os.rename(notes / BAD, notes / os.fsdecode(b"moved\xfe.md"))
        again = idx.update([notes])
        assert len(again.renamed) == 1 and again.added == again.removed == 0
        os.unlink(notes / os.fsdecode(b"moved\xfe.md"))
        assert idx.update([notes]).removed == 1
    # The stored bytes are the OS's: raw SQLite (no surrogateescape) reads them as a blob.
    with Store.open(db, create=False) as store:
        blobs = [bytes(r[0]) for r in store.conn.execute("SELECT CAST(path AS BLOB) FROM files")]
    assert not any(b"\xed" in b for b in blobs)  # never a UTF-8 encoded surrogate


def test_odd_names_are_escaped_in_lines_exact_in_json_and_files(tmp_path):
    notes = odd_notes(tmp_path)
    db = tmp_path / "i.db"
    with Index.open(db, create=True, loader=lambda *a, **k: fake()) as idx:
        idx.update([notes])
    r = run("search", "passport", "--db", db, "--mode", "lexical")
    assert r.returncode == 0, r.stderr
    assert b"bad\\xffname.md:" in r.stdout and b"\xff" not in r.stdout
    assert b"esc\\x1b[31mred\\nline.md:" in r.stdout and b"\x1b" not in r.stdout
    assert len(r.stdout.splitlines()) == 3  # one line per hit, whatever the names hold
    r = run("search", "passport", "--db", db, "--mode", "lexical", "--json")
    assert r.returncode == 0, r.stderr
    r.stdout.decode("utf-8")  # valid UTF-8: the undecodable byte is a \udcff escape
    paths = {os.fsencode(h["path"]) for h in json.loads(r.stdout)}
    assert any(p.endswith(b"/bad\xffname.md") for p in paths)
    assert any(p.endswith(b"/esc\x1b[31mred\nline.md") for p in paths)
    r = run("search", "passport", "--db", db, "--mode", "lexical", "--files", "-0")
    assert r.returncode == 0, r.stderr
    assert any(p.endswith(b"/bad\xffname.md") for p in r.stdout.split(b"\0"))
    r = run("index", "--db", db)  # the summary line names nothing raw either
    assert r.returncode == 0, r.stderr


def test_shown_escapes_what_a_terminal_would_act_on():
    assert shown("a\nb\tc\x1b[2J\x7f\x85") == "a\\nb\\tc\\x1b[2J\\x7f\\x85"
    assert shown(BAD) == "bad\\xffname.md"
    assert shown("rtl\u202eevil") == "rtl\\u202eevil"
    assert shown("naïve 数据 notes.md") == "naïve 数据 notes.md"


# --- queries and inputs ---------------------------------------------------------------------

FTS = ['"', "*", "^", ":", "(", ")", "-", "+", "AND", "OR", "NOT", "NEAR", "NEAR(", "{", "}"]


def random_query(rng: random.Random) -> str:
    """Words, FTS5 syntax, lone surrogates, control characters, emoji, CJK; now and then a
    huge one."""
    pieces = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.random()
        if kind < 0.25:
            pieces.append(rng.choice(["passport", "tomato", "tax", "python", "garden"]))
        elif kind < 0.45:
            pieces.append(rng.choice(FTS))
        elif kind < 0.6:
            pieces.append(chr(rng.randint(0xD800, 0xDFFF)))  # lone surrogate
        elif kind < 0.7:
            pieces.append(chr(rng.randint(0, 31)))
        elif kind < 0.8:
            pieces.append(chr(rng.randint(0x4E00, 0x9FFF)) * rng.randint(1, 3))
        elif kind < 0.9:
            pieces.append(chr(rng.randint(0x1F300, 0x1FAFF)))
        else:
            pieces.append(chr(rng.randint(0x80, 0x10FFFF) & ~0x800 | 0x80))
    text = rng.choice(["", " "]).join(pieces)
    if rng.random() < 0.003:
        text = (text + " tax ") * 2000
    return text


def fuzz(idx: Index, queries: list[str]) -> list[tuple[str, str, str]]:
    """(mode, query, error) of every search that raised something but a JinalocError."""
    failed = []
    for q in queries:
        for mode in ("lexical", "semantic", "hybrid"):
            try:
                idx.search(q, 5, mode=mode)
            except JinalocError:
                pass
            except Exception as e:
                failed.append((mode, q, f"{type(e).__name__}: {e}"[:200]))
    return failed


def test_thousands_of_random_queries_never_fail(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 10, paragraphs=1, words=10)
    rng = random.Random(23)
    queries = [random_query(rng) for _ in range(2500)] + ["passport " * 50_000]
    assert sum(any(0xD800 <= ord(c) <= 0xDFFF for c in q) for q in queries) > 500
    with Index.open(tmp_path / "i.db", create=True, loader=lambda *a, **k: fake()) as idx:
        idx.update([notes])
        assert fuzz(idx, queries) == []
    # A sample through the CLI (lexical needs no model): one line and an exit code.
    for q in queries[:15]:
        r = CliRunner().invoke(app, ["search", q, "--db", str(tmp_path / "i.db"), "-k", "3",
                                     "--mode", "lexical"])  # fmt: skip
        assert r.exit_code in (0, 1, 2) and "Traceback" not in r.stderr, (q, r.stderr)


@needs_gguf
def test_lone_surrogates_from_argv_search_and_embed(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 5, paragraphs=1, words=10)
    db = tmp_path / "i.db"
    r = run("index", notes, "--db", db, *MODEL)
    assert r.returncode == 0, r.stderr
    for mode in ("hybrid", "semantic", "lexical"):
        r = run("search", os.fsdecode(b"tax \xff"), "--db", db, "--mode", mode)
        assert r.returncode in (0, 1) and b"Traceback" not in r.stderr, (mode, r.stderr)
    r = run("embed", os.fsdecode(b"x\xffy"), *MODEL)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    argv = json.loads(r.stdout.splitlines()[0])["embedding"]
    # A JSON input with "\ud800" is embedded as U+FFFD, the same as the argument's byte.
    r = run("embed", *MODEL, input=b'{"text": "x\\ud800y"}\n{"text": "x\xef\xbf\xbdy"}\n')
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    rows = [json.loads(line)["embedding"] for line in r.stdout.splitlines()]
    # The same text, the same vector (to llama.cpp's rounding across batch slots).
    assert np.allclose(rows[0], rows[1], atol=1e-5) and np.allclose(rows[0], argv, atol=1e-5)


# --- confinement ----------------------------------------------------------------------------


def outside_setup(tmp_path: Path) -> tuple[Path, Path]:
    notes = tmp_path / "notes"
    make_notes(notes, 4, paragraphs=1, words=10)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd").write_text("root:x:0:0 passport secret line\n")
    (secret / "more.md").write_text("# More\n\npassport secrets in a folder\n")
    (notes / "passwd.md").symlink_to(secret / "passwd")
    (notes / "ext").symlink_to(secret)
    (notes / "inside.md").symlink_to(notes / "cooking")  # a link that stays inside
    return notes, secret


def test_symlinks_leading_out_of_the_folder_are_skipped_with_the_reason(tmp_path):
    notes, secret = outside_setup(tmp_path)
    db = tmp_path / "i.db"
    with Index.open(db, create=True, loader=lambda *a, **k: fake()) as idx:
        report = idx.update([notes])
        reasons = dict(report.skipped)
        assert "outside the indexed folder" in reasons[str(notes.resolve() / "passwd.md")]
        assert str(secret.resolve() / "passwd") in reasons[str(notes.resolve() / "passwd.md")]
        assert "outside the indexed folder" in reasons[str(notes.resolve() / "ext")]
        paths = [p for _, p, _ in idx.store.file_paths()]
        assert not any("passwd" in p or "/ext/" in p for p in paths)
        assert not idx.search("passport secret", 10, mode="lexical") or all(
            "secret" not in h.text for h in idx.search("passport secret", 10, mode="lexical")
        )
        assert idx.store.roots()[str(notes.resolve())]["follow_outside"] is False
    # Asked for: indexed, and the choice is kept with the root for later runs and watch.
    with Index.open(db, loader=lambda *a, **k: fake()) as idx:
        report = idx.update([(notes, WalkOptions(follow_outside=True))])
        assert report.added == 2
        assert idx.store.roots()[str(notes.resolve())]["follow_outside"] is True
        assert idx.update().unchanged == 6  # the saved options follow outside links again
        hits = idx.search("passport secret", 10, mode="lexical")
        assert any("passwd" in h.path for h in hits)


def test_a_note_swapped_for_an_outside_symlink_is_never_served(tmp_path):
    notes, secret = outside_setup(tmp_path)
    target = notes / "cooking" / "note-0000.md"
    with Index.open(tmp_path / "i.db", create=True, loader=lambda *a, **k: fake()) as idx:
        idx.update([notes])
        found = idx.search("pasta sauce tomato", 10, mode="lexical")
        assert str(target.resolve()) in [h.path for h in found]
        assert idx.servable(str(target.resolve()))
        target.unlink()
        target.symlink_to(secret / "passwd")  # since indexed: the index still has its text
        for mode in ("lexical", "hybrid", "semantic"):
            hits = idx.search("pasta sauce tomato", 10, mode=mode)
            assert str(target.resolve()) not in [h.path for h in hits], mode
        assert not idx.servable(str(notes.resolve() / "cooking" / "note-0000.md"))
        assert not idx.servable(str(secret / "passwd"))  # not in any root at all


def test_follow_outside_goes_with_paths(tmp_path):
    r = CliRunner().invoke(app, ["index", "--follow-outside", "--db", str(tmp_path / "i.db")])
    assert r.exit_code == 2 and "--follow-outside" in r.stderr
    r = CliRunner().invoke(app, ["watch", "--follow-outside", "--db", str(tmp_path / "i.db")])
    assert r.exit_code == 2 and "--follow-outside goes with the PATHs" in r.stderr


@needs_gguf
def test_cli_index_follow_outside(tmp_path):
    notes, _ = outside_setup(tmp_path)
    db = tmp_path / "i.db"
    r = CliRunner().invoke(app, ["index", str(notes), "--db", str(db), "--json", *MODEL])
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["added"] == 4
    assert sum("outside the indexed folder" in s["reason"] for s in data["skipped_files"]) == 2
    assert "outside the indexed folder (--follow-outside indexes it)" in r.stderr
    r = CliRunner().invoke(
        app, ["index", str(notes), "--db", str(db), "--follow-outside", "--json"]
    )
    assert r.exit_code == 0 and json.loads(r.stdout)["added"] == 2, r.stderr
    status = json.loads(CliRunner().invoke(app, ["status", "--db", str(db), "--json"]).stdout)
    assert status["roots"][0]["follow_outside"] is True


def in_time(fn, seconds: float = 10.0):
    """fn() in a thread: its result, or a failure when it blocks (a FIFO opened)."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_fifos_sockets_are_skipped_with_a_reason_and_never_opened(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 3, paragraphs=1, words=10)
    os.mkfifo(notes / "pipe.md")
    os.mkfifo(notes / ".gitignore")  # an ignore file that is a FIFO is not read either
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(notes / "sock.md"))
    try:
        items = in_time(lambda: list(Walker().walk(notes)))
        reasons = {i.path.name: getattr(i, "reason", None) for i in items}
        assert reasons["pipe.md"] == "named pipe (FIFO): not read"
        assert reasons["sock.md"] == "socket: not read"
        with pytest.raises(JinalocError, match="named pipe"):
            in_time(lambda: read_input(notes / "pipe.md"))
        with Index.open(tmp_path / "i.db", create=True, loader=lambda *a, **k: fake()) as idx:
            report = in_time(lambda: idx.update([notes]))
            assert report.added == 3 and len(report.skipped) == 2
            # An indexed note swapped for a FIFO: reading it (MCP get), `similar` and a
            # search showing it never block.
            note = sorted(notes.rglob("note-*.md"))[0]
            note.unlink()
            os.mkfifo(note)
            with pytest.raises(JinalocError, match="named pipe"):
                in_time(lambda: read_lines(note, None, None))
            assert in_time(lambda: idx.similar(note, 3)) is not None
            in_time(lambda: idx.search("tomato", 3, mode="lexical"))
            assert in_time(lambda: idx.update([notes])).removed == 1
    finally:
        sock.close()


def test_a_fifo_given_as_path_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    r = run("index", fifo, "--db", tmp_path / "i.db", timeout=30)
    assert r.returncode == 2 and b"named pipe (FIFO)" in r.stderr, r.stderr
    assert b"Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("embed", "--file", fifo, timeout=30)
    assert r.returncode == 2 and b"named pipe (FIFO)" in r.stderr, r.stderr
    assert time.monotonic() - start < 30


# --- the watcher ----------------------------------------------------------------------------


def test_watch_survives_a_name_that_is_not_utf8_and_indexes_edits_after_it(tmp_path):
    from test_watch import Watched, until

    w = Watched(tmp_path, notes=4)
    try:
        # watchfiles cannot hand this name over: its watch fails, and is started anew.
        (w.notes / BAD).write_text("# Odd\n\nquokka sightings by the river\n")
        bad = str(w.notes.resolve() / BAD)
        assert until(lambda: Store_has(w.db, bad))
        assert until(lambda: w.watcher.restarts >= 1)
        assert "decode" in w.watcher.health()["last_error"]
        assert w.watcher.health()["running"] and w.thread.is_alive()
        # Edits after it are still seen (the bad file's own events too, after a restart).
        (w.notes / "later.md").write_text("# Later\n\nwombat tracks in the snow\n")
        assert until(lambda: Store_has(w.db, str(w.notes.resolve() / "later.md")))
        (w.notes / BAD).write_text("# Odd\n\nplatypus, edited\n")
        assert until(lambda: "platypus" in texts(w.db))
        w.converges()
    finally:
        w.close()
    assert not w.watcher.health()["running"]


def Store_has(db: Path, path: str) -> bool:
    with Store.open(db, create=False) as store:
        return store.file(path) is not None


def texts(db: Path) -> str:
    with Store.open(db, create=False) as store:
        return " ".join(r[0] for r in store.conn.execute("SELECT text FROM chunks"))


class FlakySource:
    """A RustNotify whose first watches raise, as a broken event source would."""

    failures = 2

    def __init__(self, *args):
        self.real = RustNotify(*args)

    def watch(self, *args):
        if FlakySource.failures:
            FlakySource.failures -= 1
            raise RuntimeError("event source broke")
        return self.real.watch(*args)

    def close(self):
        self.real.close()


def test_watch_restarts_whatever_its_event_source_throws(tmp_path, monkeypatch):
    from test_watch import Watched, until

    import jinaloc.watch

    monkeypatch.setattr(jinaloc.watch, "RESTART_S", (0.05, 0.2))
    monkeypatch.setattr("watchfiles._rust_notify.RustNotify", FlakySource)
    w = Watched(tmp_path, notes=3)
    try:
        assert until(lambda: w.watcher.restarts == 2)
        health = w.watcher.health()
        assert health["running"] and health["last_error"] == "RuntimeError: event source broke"
        (w.notes / "new.md").write_text("# New\n\nnumbat burrow\n")
        assert until(lambda: Store_has(w.db, str(w.notes.resolve() / "new.md")))
    finally:
        w.close()


def test_a_watcher_that_died_says_so(tmp_path, monkeypatch):
    from test_watch import Loader

    from jinaloc.watch import Watcher

    notes = tmp_path / "notes"
    make_notes(notes, 2, paragraphs=1, words=5)
    idx = Index(Store.open(tmp_path / "i.db"), Loader())
    watcher = Watcher(idx, [notes], record=False)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(idx, "update", broken)
    with pytest.raises(OSError):
        watcher.run(threading.Event())
    idx.close()
    health = watcher.health()
    assert not health["running"] and "No space left" in health["error"]

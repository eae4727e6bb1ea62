"""Keeping an index fresh as files change: `Watcher`, and the record of a running one.

A watcher catches up once (what changed while nothing watched), then waits for file events
(watchfiles: inotify, FSEvents or ReadDirectoryChangesW, no polling of the tree), groups them
until the roots are quiet for `debounce_ms`, and applies each group through `Index.update`
planned over just the touched paths (planner.Scope): the same ignore rules, size limits and
skip reasons as `index`, renames paired by hash (not re-embedded), one transaction per file.

A root that disappears keeps its files, as `index` does, and is caught up in full when it
comes back (or is replaced by another folder of the same name). `run(stop)` returns once
`stop` is set, between two files. In a thread beside a server, on a session of the served
index (its own connection, the same model):

    stop = threading.Event()
    session = served.session()
    thread = threading.Thread(target=Watcher(session, on_batch=log).run, args=(stop,))
    thread.start()
    ...
    stop.set(); thread.join(); session.close()

While it runs, a small JSON record in the state dir says so (`records.read_watcher`, shown by
`status`).

The event source may fail (watchfiles gives up on a name that is not UTF-8, a folder it
cannot watch...): the watch is then started anew after a pause, with a catch-up that
applies what it missed, and the failure is logged, counted and kept in the record and in
`health()` (what a server's /health reports)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .defaults import DEFAULT_DEBOUNCE_MS
from .errors import JinalocError
from .index import Progress, Report
from .records import read_watcher, watcher_path, write_watcher
from .walk import IGNORE_FILES, WalkOptions

if TYPE_CHECKING:
    from .index import Index

log = logging.getLogger("jinaloc")

# A batch waits at most this long for quiet (a sync tool that writes for minutes).
MAX_WAIT_MS = 10_000
# How often the roots are looked at while idle: one gone or back, one added by `jinaloc
# index` meanwhile. A query and a stat per root, not a walk.
CHECK_MS = 5_000
# More touched paths than this in one root: one walk of the root is cheaper.
MAX_SCOPED = 2_000
# Pause before a new watch after the event source failed: doubling from the first, up to
# the last while it keeps failing (each new watch catches up, so nothing is missed).
RESTART_S = (0.5, 30.0)


class _SourceFailed(Exception):
    """The file event source (watchfiles) raised; the watch is started anew."""


class _Stopped(Exception):
    """`stop` was set while a batch was being applied."""


@dataclass
class Batch:
    """One applied group of changes (or the catch-up run at start)."""

    number: int  # of the batches reported, from 1
    events: int  # file events in the group (0 for a catch-up)
    report: Report
    catch_up: bool = False
    # What was planned: root -> touched paths in it (None: all of it); None for a catch-up.
    scope: dict[str, list[str] | None] | None = None
    finished: float = field(default_factory=time.time)

    def changed(self) -> bool:
        r = self.report
        return bool(r.added or r.updated or r.removed or r.renamed)

    def to_json(self) -> dict:
        return {
            "batch": self.number,
            "time": _iso(self.finished),
            "catch_up": self.catch_up,
            "events": self.events,
            **self.report.to_json(),
        }


class _StopBetweenFiles(Progress):
    def __init__(self, stop: threading.Event):
        self.stop = stop

    def file_done(self, chunks: int) -> None:
        if self.stop.is_set():
            raise _Stopped


class _Wake:
    """What watchfiles asks every step whether to return: `stop` is set, or (looked at
    every `check_ms`) the roots need a new watch."""

    def __init__(self, stop: threading.Event, roots_changed: Callable[[], bool], check_ms: int):
        self.stop = stop
        self.roots_changed = roots_changed
        self.every = check_ms / 1000
        self.next = time.monotonic() + self.every
        self.rewatch = False

    def is_set(self) -> bool:
        if self.stop.is_set() or self.rewatch:
            return True
        if time.monotonic() >= self.next:
            self.rewatch = self.roots_changed()
            self.next = time.monotonic() + self.every
        return self.rewatch


class Watcher:
    """Keeps `index` up to date with its roots (or with `roots`: paths, or (path,
    WalkOptions) pairs, saved as roots as `index` saves them). `on_batch(batch)` hears of
    every batch that changed the index or skipped a touched file, and of the first
    catch-up (batch 1) even when it changed nothing."""

    def __init__(
        self,
        index: Index,
        roots: Sequence[str | Path | tuple[Path, WalkOptions]] | None = None,
        *,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
        on_batch: Callable[[Batch], None] | None = None,
        record: bool = True,
        check_ms: int = CHECK_MS,
    ):
        self.index = index
        self.debounce_ms = max(int(debounce_ms), 1)
        self.check_ms = check_ms
        self.on_batch = on_batch or (lambda batch: None)
        self.record = record
        self.batches = 0
        self.last_applied: float | None = None
        self.started = time.time()
        self._given = None if roots is None else self._resolve(roots)
        db = str(Path(index.path).resolve())
        self._own = {db + suffix for suffix in ("", "-wal", "-shm", "-journal")}
        self._roots: list[tuple[Path, WalkOptions]] = []
        self._watched: dict[str, tuple[int, int] | None] = {}
        self._gone: set[str] = set()  # roots missing (and said so)
        self._number = 0
        self.running = False
        self.restarts = 0  # new watches after the event source failed
        self.last_error: str | None = None  # the event source's last failure
        self.error: str | None = None  # why `run` ended, when it failed

    def _resolve(self, roots) -> list[tuple[Path, WalkOptions]]:
        out = []
        for item in roots:
            path, options = (item, None) if isinstance(item, (str, Path)) else item
            path = Path(path).expanduser().resolve()
            if not path.exists():
                raise JinalocError(f"{path}: no such file or folder")
            out.append((path, options or self.index.root_options(path)))
        return out

    # the roots

    def _all_roots(self) -> list[tuple[Path, WalkOptions]]:
        if self._given is not None:
            return self._given
        return [(Path(r), WalkOptions(**o)) for r, o in self.index.roots().items()]

    def _identities(self, roots) -> dict[str, tuple[int, int] | None]:
        ids = {}
        for root, _ in roots:
            try:
                st = os.stat(root)
                ids[str(root)] = (st.st_dev, st.st_ino)
            except OSError:
                ids[str(root)] = None
        return ids

    def _roots_changed(self) -> bool:
        """A root gone, back, replaced, added or dropped since the watch started."""
        return self._identities(self._all_roots()) != self._watched

    # running

    def run(self, stop: threading.Event | None = None) -> None:
        """Catch up, then apply changes as they come until `stop` is set (or Ctrl-C, when
        run in the main thread)."""
        from watchfiles._rust_notify import RustNotify

        stop = stop or threading.Event()
        progress = _StopBetweenFiles(stop)
        self._claim_record()
        self.running, self.error = True, None
        self._failures = 0  # of the event source in a row
        try:
            while not stop.is_set():
                self._roots = self._all_roots()
                self._watched = self._identities(self._roots)
                gone = {root for root, ident in self._watched.items() if ident is None}
                for root in sorted(gone - self._gone):
                    log.warning("%s is gone; its files are kept until it comes back", root)
                self._gone = gone
                present = [str(r) for r, _ in self._roots if self._watched[str(r)]]
                if not present:
                    stop.wait(self.check_ms / 1000)
                    continue
                # Watching starts before the catch-up, so nothing falls between the two.
                try:
                    with _Source(RustNotify, _outermost(present)) as notify:
                        self._apply(None, 0, progress)
                        self._listen(notify, stop, progress)
                except _SourceFailed as e:
                    self._source_failed(e, stop)
        except _Stopped:
            pass
        except Exception as e:  # Ctrl-C is a stop, not a failure
            self.error = f"{type(e).__name__}: {e}"
            raise
        finally:
            self.running = False
            self._drop_record()

    def _source_failed(self, e: _SourceFailed, stop: threading.Event) -> None:
        cause = e.__cause__ or e
        self.restarts += 1
        self.last_error = f"{type(cause).__name__}: {cause}"
        pause = min(RESTART_S[0] * 2**self._failures, RESTART_S[1])
        self._failures += 1
        log.warning("the file watch failed (%s); watching again in %.1f s", self.last_error, pause)
        self._write_record()
        stop.wait(pause)

    def health(self) -> dict:
        """Whether the watcher runs, how often its event source failed and was restarted,
        its last failure, and why it stopped (`error`, when it died)."""
        return {
            "running": self.running,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "error": self.error,
            "batches": self.batches,
        }

    def _listen(self, notify, stop: threading.Event, progress: Progress) -> None:
        """Apply event groups until `stop`, or until the roots need a new watch (or raise
        _SourceFailed)."""
        wake = _Wake(stop, self._roots_changed, self.check_ms)
        while not stop.is_set():
            # No timeout: watchfiles drops what arrives while it returns one. Its stop
            # event (asked every step) wakes it instead, and a new watch catches up in full.
            try:
                changes = notify.watch(MAX_WAIT_MS, self.debounce_ms, 0, wake)
            except Exception as e:  # anything the Rust side raises (a non-UTF-8 name...)
                raise _SourceFailed from e
            self._failures = 0
            if changes == "signal":
                raise KeyboardInterrupt
            if changes == "stop":
                return
            paths = {path for _, path in changes}
            self._apply_paths(paths, progress)
            # A root itself moved, deleted or replaced (even if back already): watch anew.
            if paths & self._watched.keys() or self._roots_changed():
                return

    def _apply_paths(self, paths: Iterable[str], progress: Progress) -> Batch | None:
        """Apply the changes at these absolute paths (files or folders, gone or not)."""
        paths = list(paths)
        scope = self._scope(paths)
        if not scope:
            return None
        return self._apply(scope, len(paths), progress)

    def _apply(self, scope, events: int, progress: Progress) -> Batch | None:
        """One update: of the scope (root -> touched paths, None for all of it), or with no
        scope a catch-up of every root there is."""
        roots = [
            (root, options)
            for root, options in self._roots
            if (scope is None or str(root) in scope) and root.exists()
        ]
        if not roots:
            return None
        only = {r: rels for r, rels in (scope or {}).items() if rels is not None}
        report = Report()
        batch = Batch(0, events, report, scope is None, scope)
        try:
            self.index.update(roots, report=report, scope=only, progress=progress)
        except JinalocError:
            if all(root.exists() for root, _ in roots):
                raise
            return None  # a root went away while it was planned: the next watch sees to it
        finally:
            batch.finished = time.time()
            if batch.changed():
                self.batches += 1
                self.last_applied = batch.finished
                self._write_record()
            # The first catch-up always (it says the watch began); later ones (a root back
            # or replaced) when they changed something, like any batch.
            first = batch.catch_up and self._number == 0
            if first or batch.changed() or (report.skipped and not batch.catch_up):
                self._number += 1
                batch.number = self._number
                self.on_batch(batch)
        return batch

    def _scope(self, paths: Iterable[str]) -> dict[str, list[str] | None]:
        scope: dict[str, list[str] | None] = {}
        for path in paths:
            if path in self._own:
                continue
            for root, _ in self._roots:
                r = str(root)
                if path == r:
                    scope[r] = None
                    continue
                if not path.startswith(r + os.sep):
                    continue
                rel = _planned(path[len(r) + 1 :].replace(os.sep, "/"))
                if rel == "":
                    scope[r] = None
                elif rel is not None and scope.get(r, ()) is not None:
                    scope.setdefault(r, []).append(rel)
        for r, rels in scope.items():
            if rels is not None and len(rels) > MAX_SCOPED:
                scope[r] = None
        return scope

    # the record

    def _claim_record(self) -> None:
        if not self.record:
            return
        other = read_watcher(self.index.path)
        if other and other["pid"] != os.getpid():
            raise JinalocError(
                f"a watcher (pid {other['pid']}) already keeps {self.index.path} fresh",
                "stop it first",
            )
        self._write_record()

    def _write_record(self) -> None:
        if not self.record:
            return
        data = {
            "pid": os.getpid(),
            "db": str(Path(self.index.path).resolve()),
            "started": _iso(self.started),
            "last_applied": _iso(self.last_applied) if self.last_applied else None,
            "batches": self.batches,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }
        write_watcher(self.index.path, data)

    def _drop_record(self) -> None:
        if self.record:
            watcher_path(self.index.path).unlink(missing_ok=True)


class _Source:
    """A RustNotify on `paths` whose own failures (starting, stopping) are _SourceFailed."""

    def __init__(self, notify_class, paths: list[str]):
        try:
            self.notify = notify_class(paths, False, False, 300, True, True)
        except Exception as e:
            raise _SourceFailed from e

    def __enter__(self):
        return self.notify

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):  # closing a failed watch: nothing to save
            self.notify.close()


def _planned(rel: str) -> str | None:
    """What to plan for a changed path in a root: itself, its folder (an ignore file
    changed) or nothing (inside a hidden folder, or hidden itself)."""
    head, _, name = rel.rpartition("/")
    if any(part.startswith(".") for part in head.split("/")):
        return None
    if name in IGNORE_FILES:
        return head
    return None if name.startswith(".") else rel


def _outermost(paths: list[str]) -> list[str]:
    """Paths not inside another one (a nested root is watched by its outer root)."""
    return [p for p in paths if not any(p.startswith(o + os.sep) for o in paths if o != p)]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).astimezone().isoformat(timespec="seconds")

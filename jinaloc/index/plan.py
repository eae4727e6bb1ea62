"""What an update of an index would do, found without a model and without writing.

Walks the roots, compares each file with the index (size and mtime first, then the content
hash), pairs files that vanished with new files of the same hash (renames, moved without
re-embedding) and lists the rest as new, changed, removed or skipped. `status` shows a plan;
the writer (write.py) applies one. A `scope` limits a plan to some paths of a root (what
`watch` saw change); the result there is the same as a plan of the whole root."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..reader import Extracted, Unreadable, extract_text, read_bytes
from ..walk import Candidate, LeftOut, Skipped, WalkOptions, size_limit
from .store import FileRecord, Store

Roots = Sequence[tuple[Path, WalkOptions]]
# Resolved root -> the paths in it (relative, POSIX) to plan; a root not in it is planned whole.
Scope = Mapping[str, Sequence[str]]


@dataclass
class Work:
    """A file to (re-)embed, or the new place of a renamed file."""

    candidate: Candidate
    hash: str
    record: FileRecord | None  # the indexed version at this path, if any
    max_size: int
    # The file's text as planned (and hashed), so the writer need not read it again; None
    # when the plan kept no texts (status) or its budget was spent.
    content: Extracted | None = None


@dataclass
class Plan:
    unchanged: int = 0
    touched: list[tuple[FileRecord, Candidate]] = field(default_factory=list)
    new: list[Work] = field(default_factory=list)
    changed: list[Work] = field(default_factory=list)
    renamed: list[tuple[FileRecord, Work]] = field(default_factory=list)
    removed: list[FileRecord] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Of those, unreadable files seen unchanged in an earlier run (not read again).
    known_skips: set[str] = field(default_factory=set)
    # Unreadable files to remember (path, size, mtime_ns, reason); paths to forget.
    new_skips: list[tuple[str, int, int, str]] = field(default_factory=list)
    cleared_skips: list[str] = field(default_factory=list)
    left_out: Counter = field(default_factory=Counter)  # files not of a selected type, by type
    # Unchanged files whose tags and date were never read (indexed before schema 3).
    reread: list[tuple[FileRecord, Candidate]] = field(default_factory=list)

    def left_out_by_type(self) -> dict[str, int]:
        """Left-out files per type, most first (ties by name)."""
        return dict(sorted(self.left_out.items(), key=lambda kv: (-kv[1], kv[0])))

    def changes(self) -> dict[str, list]:
        """The plan's changes by kind, as paths (for status)."""
        return {
            "new": [w.candidate.path.as_posix() for w in self.new],
            "modified": [w.candidate.path.as_posix() for w in self.changed],
            "renamed": [{"from": old.path, "to": str(w.candidate.path)} for old, w in self.renamed],
            "deleted": [r.path for r in self.removed],
            "reread": [r.path for r, _ in self.reread],
        }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_update(store: Store, roots: Roots, scope: Scope | None = None, keep: int = 0) -> Plan:
    """What an update of `roots` (only the paths in `scope` of those it names) would do.
    `keep`: characters of planned texts to keep in the plan for the writer (each changed
    file is then read, hashed and extracted once a run); 0 for a plan only shown."""
    plan = Plan()
    known: dict[str, FileRecord] = {}
    present: dict[str, tuple[Candidate, int]] = {}
    db = str(store.path.resolve())
    own = {db + suffix for suffix in ("", "-wal", "-shm", "-journal", ".lock")}
    for root, options in roots:
        resolved = str(Path(root).expanduser().resolve())
        only = scope.get(resolved) if scope else None
        for path in [resolved] if only is None else [str(Path(resolved, rel)) for rel in only]:
            known.update(store.files_under(path))
            record = store.file(path)  # a file given as a root, or a file in the scope
            if record:
                known[record.path] = record
        for item in options.walker().walk(Path(root), only):
            if str(item.path) in own:
                continue
            if isinstance(item, LeftOut):
                plan.left_out[item.kind] += 1
            elif isinstance(item, Skipped):
                plan.skipped.append((str(item.path), item.reason))
            else:
                present.setdefault(str(item.path), (item, size_limit(item.rel, options.max_size)))
    readable: set[str] = set()
    skips = store.skips()
    for path, (cand, max_size) in present.items():
        record = known.get(path)
        skip = skips.get(path)
        if skip and record is None and skip[:2] == (cand.size, cand.mtime_ns):
            plan.skipped.append((path, skip[2]))
            plan.known_skips.add(path)
            continue
        if record and (record.size, record.mtime_ns) == (cand.size, cand.mtime_ns):
            plan.unchanged += 1
            readable.add(path)
            if not record.has_meta:
                plan.reread.append((record, cand))
            continue
        try:
            data = read_bytes(cand.path, max_size)
            content = extract_text(data, cand.rel, probe=keep <= 0)
        except Unreadable as e:
            plan.skipped.append((path, str(e)))
            plan.new_skips.append((path, cand.size, cand.mtime_ns, str(e)))
            continue
        if skip:
            plan.cleared_skips.append(path)
        readable.add(path)
        work = Work(cand, sha256(data), record, max_size)
        if len(content.text) <= keep:
            work.content, keep = content, keep - len(content.text)
        if record is None:
            plan.new.append(work)
        elif record.hash == work.hash:
            plan.unchanged += 1
            plan.touched.append((record, cand))
            if not record.has_meta:
                plan.reread.append((record, cand))
        else:
            plan.changed.append(work)
    # A file another indexed root covers is that root's business (nested roots with their
    # own options): it is not removed for being left out of this one.
    planned = {str(Path(root).expanduser().resolve()) for root, _ in roots}
    others = [r.rstrip("/") for r in store.roots() if r not in planned]
    gone = {
        p: r
        for p, r in known.items()
        if p not in readable and not any(p == o or p.startswith(o + "/") for o in others)
    }
    by_hash: dict[str, list[FileRecord]] = defaultdict(list)
    for record in gone.values():
        by_hash[record.hash].append(record)
    for work in list(plan.new):
        if by_hash[work.hash]:
            old = by_hash[work.hash].pop()
            plan.renamed.append((old, work))
            plan.new.remove(work)
            del gone[old.path]
    plan.removed = list(gone.values())
    plan.reread += [(old, work.candidate) for old, work in plan.renamed if not old.has_meta]
    return plan

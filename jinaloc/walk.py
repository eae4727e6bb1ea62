"""Finding the files to index under some roots.

Ignore rules: .gitignore and .jinalocignore files (gitignore syntax, nested ones apply to
their own folder), hidden files and folders, editors' swap, backup and temporary files,
--exclude globs. Ignored paths are left out silently. Then the file's type: given --include
globs, the files they match whatever their type; else note and document formats (and source
code when asked), the rest come back as a `LeftOut` with their type, so the caller can count
them (README "What gets indexed").
Files that are candidates but cannot be indexed (symlink loop, unreadable folder, too large)
come back as a `Skipped` with the reason; reading them (reader.py) finds the rest.

Confinement: a symlink whose real path leaves the folder being walked (`ln -s /etc/passwd
notes/x.md`, or a linked folder elsewhere) is skipped with the reason unless the walk
follows outside links (`follow_outside`, `index --follow-outside`); named pipes, sockets and
devices are skipped too, and never opened: reading one could block forever or have effects.
File names are taken as the OS gives them: bytes that are not UTF-8 stay in the str as
surrogate escapes (Python's `os.fsdecode`), which the store keeps byte for byte."""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from .chunking import NOTE_SUFFIXES
from .errors import JinalocError
from .reader import (
    DEFAULT_MAX_SIZE,
    DOCUMENT_MAX_SIZE,
    DOCUMENTS,
    Unreadable,
    os_reason,
    read_bytes,
    special_kind,
)

if TYPE_CHECKING:  # loaded by the first walk: a search never needs it
    import pathspec

IGNORE_FILES = (".gitignore", ".jinalocignore")
# Editors' swap, backup and temporary files (vim's `4913` write test, `note.md~`, emacs
# `#note.md#`, atomic-save temporaries): never notes, and short-lived under `watch`.
EDITOR_FILES = ("*~", "*.swp", "*.swo", "*.swx", "*.tmp", "4913", "#*#")
# Source code, indexed with `--code` (or named by an --include glob).
CODE = {
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".jsx", ".ts", ".mts", ".cts", ".tsx", ".go", ".rs",
    ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".java", ".kt", ".kts", ".scala", ".swift",
    ".m", ".mm", ".rb", ".php", ".pl", ".pm", ".lua", ".r", ".jl", ".sh", ".bash", ".zsh",
    ".fish", ".ps1", ".sql", ".hs", ".ml", ".mli", ".ex", ".exs", ".erl", ".clj", ".cljs", ".el",
    ".lisp", ".scm", ".rkt", ".dart", ".cs", ".fs", ".vb", ".zig", ".nim", ".vue", ".svelte",
    ".tf", ".cmake", ".gradle", ".groovy", ".vim",
}  # fmt: skip
CODE_NAMES = {
    "makefile", "gnumakefile", "dockerfile", "containerfile", "justfile", "rakefile",
    "gemfile", "vagrantfile", "procfile", "cmakelists.txt",
}  # fmt: skip
# Generated files, never worth a search result: left out even with --code.
GENERATED = (".min.js", ".min.css", ".map")
TYPES = ("notes", "code")  # what a walk selects when no --include glob is given


@dataclass(frozen=True)
class Candidate:
    """A file to index: `path` is `root / rel`, as walked (symlinked folders not resolved)."""

    path: Path
    root: Path
    rel: str  # POSIX path relative to the root
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True)
class LeftOut:
    """A file not of a selected type; `kind` is what the summary counts it as (".svg")."""

    path: Path
    kind: str


def inside(real: str, root: str) -> bool:
    """Whether the real path `real` is the real folder `root` or lies under it."""
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def check_root(path: Path) -> None:
    """A folder or file to index, or a one-line error: gone, or a FIFO, socket or device
    (never opened)."""
    try:
        st = Path(path).expanduser().stat()
    except FileNotFoundError:
        raise JinalocError(f"{path}: no such file or folder") from None
    except OSError as e:
        raise JinalocError(f"{path}: {e.strerror or e}") from None
    kind = special_kind(st.st_mode)
    if kind:
        raise JinalocError(f"{path}: a {kind}, not a file or folder: refused")


def outside_reason(target: str) -> str:
    return f"symlink to {target}, outside the indexed folder (--follow-outside indexes it)"


def parse_size(text: str) -> int:
    """Bytes from '500000', '512K', '1M', '1.5MB', '2GiB' (binary multiples)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise JinalocError(f"invalid size {text!r}: use bytes or a K, M or G suffix (e.g. 2M)")
    scale = 1024 ** " kmg".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * scale)


def kind_of(name: str) -> str:
    """A file's type as the summary names it: its suffix (".min.js" for minified files), or
    its name when it has none."""
    lower = name.lower()
    generated = next((g for g in GENERATED if lower.endswith(g)), None)
    return generated or PurePath(lower).suffix or name


def selected(name: str, types: str = "notes") -> bool:
    """Whether a file is of a type the walk takes: notes and documents (and code with
    `types="code"`). A file without a suffix is taken as a plain-text note (README, TODO),
    unless it is a build file (Makefile), which is code."""
    lower = name.lower()
    if lower.endswith(GENERATED):
        return False
    suffix = PurePath(lower).suffix
    if lower in CODE_NAMES:
        return types == "code"
    if suffix in NOTE_SUFFIXES or suffix in DOCUMENTS or not suffix:
        return True
    return types == "code" and suffix in CODE


def size_limit(name: str, max_size: int) -> int:
    """The size limit of a file: `max_size`, or DOCUMENT_MAX_SIZE for documents."""
    return DOCUMENT_MAX_SIZE if PurePath(name.lower()).suffix in DOCUMENTS else max_size


def _spec(patterns: Iterable[str]) -> pathspec.GitIgnoreSpec | None:
    lines = [p for p in patterns if p.strip()]
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


class _Rules:
    """The ignore files in effect for one folder: outer folders first, deeper ones win."""

    def __init__(self, specs: tuple[tuple[str, pathspec.GitIgnoreSpec], ...] = ()):
        self.specs = specs

    def enter(self, folder: Path, rel: str) -> _Rules:
        lines: list[str] = []
        for name in IGNORE_FILES:
            try:  # read as any file is: a FIFO named .gitignore must not block the walk
                data = read_bytes(folder / name)
            except Unreadable:
                continue
            lines += data.decode("utf-8", errors="replace").splitlines()
        spec = _spec(lines)
        return _Rules((*self.specs, (rel, spec))) if spec else self

    def ignored(self, rel: str, is_dir: bool) -> bool:
        result = False
        for base, spec in self.specs:
            if base and not rel.startswith(base + "/"):
                continue
            sub = rel[len(base) + 1 :] if base else rel
            verdict = spec.check_file(sub + "/" if is_dir else sub).include
            if verdict is not None:
                result = verdict
        return result


class Walker:
    """Walks roots with one set of options; yields candidates and skipped files, sorted."""

    def __init__(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        max_size: int = DEFAULT_MAX_SIZE,
        types: str = "notes",
        follow_outside: bool = False,
    ):
        if types not in TYPES:
            raise JinalocError(f"unknown file types {types!r}: use one of {', '.join(TYPES)}")
        self.include = _spec(include)
        self.exclude = _spec(exclude)
        self.max_size = max_size
        self.types = types
        self.follow_outside = follow_outside

    def walk(
        self, root: Path, only: Sequence[str] | None = None
    ) -> Iterator[Candidate | Skipped | LeftOut]:
        """Everything under `root`; with `only` (POSIX paths relative to a folder root), just
        what a full walk would yield at or under those paths (gone ones yield nothing)."""
        root = root.expanduser()
        self._seen: dict[tuple[int, int], Path] = {}
        try:
            st = root.stat()
        except FileNotFoundError:
            raise JinalocError(f"{root}: no such file or folder") from None
        except OSError as e:
            raise JinalocError(f"{root}: {e.strerror or e}") from None
        root = root.resolve()
        self._real_root = str(root)  # what a symlink met on the walk must stay inside
        if stat.S_ISDIR(st.st_mode) and only is not None and "" not in only:
            yield from self._walk_only(root, only, _Rules().enter(root, ""), {_key(st)})
        elif stat.S_ISDIR(st.st_mode):
            yield from self._walk_dir(root, root, "", _Rules().enter(root, ""), {_key(st)})
        else:
            # A file named on the command line is indexed whatever the ignore rules say.
            yield self._file(root, root.parent, root.name, st)

    def _walk_only(
        self, root: Path, rels: Sequence[str], root_rules: _Rules, root_key: set
    ) -> Iterator[Candidate | Skipped]:
        # Folders entered on the way down (their ignore files read once), by relative path.
        entered: dict[str, tuple[_Rules, set] | None] = {"": (root_rules, root_key)}
        for rel in _outermost(rels):
            parts = rel.split("/")
            if any(part.startswith(".") or not part for part in parts):
                continue
            parent = "/".join(parts[:-1])
            state = self._enter_parents(root, parent, entered)
            if state is None:
                continue
            rules, ancestors = state
            path = root / rel
            try:
                st = os.stat(path)
            except OSError as e:
                if not os.path.lexists(path) or self._excluded(rules, rel, path.is_dir()):
                    continue
                yield Skipped(path, os_reason(e, path.is_symlink()))
                continue
            yield from self._visit(root, path, rel, st, rules, ancestors, path.is_symlink())

    def _enter_parents(self, root: Path, rel: str, entered: dict) -> tuple[_Rules, set] | None:
        """The rules and ancestor keys in folder `rel`, or None when a full walk would not
        enter it (gone, not a folder, ignored, a symlink loop)."""
        if rel in entered:
            return entered[rel]
        head, _, name = rel.rpartition("/")
        state = self._enter_parents(root, head, entered)
        result = None
        if state is not None:
            rules, ancestors = state
            path = root / rel
            try:
                st = os.stat(path)
            except OSError:
                st = None
            if (
                st is not None
                and stat.S_ISDIR(st.st_mode)
                and not self._excluded(rules, rel, True)
                and _key(st) not in ancestors
                and not (path.is_symlink() and self._escapes(path))
            ):
                result = (rules.enter(path, rel), ancestors | {_key(st)})
        entered[rel] = result
        return result

    def _walk_dir(
        self, root: Path, folder: Path, prefix: str, rules: _Rules, ancestors: set
    ) -> Iterator[Candidate | Skipped | LeftOut]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            yield Skipped(folder, os_reason(e))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            path = root / rel
            try:
                st = os.stat(entry.path)
            except OSError as e:
                if self._excluded(rules, rel, entry.is_dir(follow_symlinks=False)):
                    continue
                yield Skipped(path, os_reason(e, entry.is_symlink()))
                continue
            yield from self._visit(root, path, rel, st, rules, ancestors, entry.is_symlink())

    def _visit(
        self,
        root: Path,
        path: Path,
        rel: str,
        st: os.stat_result,
        rules: _Rules,
        ancestors: set,
        link: bool = False,
    ) -> Iterator[Candidate | Skipped | LeftOut]:
        """What one folder entry gives (its stat done): a folder walked, a file classified.
        `link`: the entry is a symlink. Folders walked are inside the root, so only a
        symlink can lead out of it."""
        if link and not self._excluded(rules, rel, stat.S_ISDIR(st.st_mode)):
            target = self._escapes(path)
            if target:
                yield Skipped(path, outside_reason(target))
                return
        if stat.S_ISDIR(st.st_mode):
            if self._excluded(rules, rel, True):
                return
            if _key(st) in ancestors:
                yield Skipped(path, "symlink loop")
                return
            yield from self._walk_dir(
                root, path, rel + "/", rules.enter(path, rel), ancestors | {_key(st)}
            )
        elif stat.S_ISREG(st.st_mode):
            if self._excluded(rules, rel, False):
                return
            if self.include:  # the user's globs choose files whatever their type
                if not self.include.match_file(rel):
                    return
            elif not selected(path.name, self.types):
                yield LeftOut(path, kind_of(path.name))
                return
            yield self._file(path, root, rel, st)
        elif not self._excluded(rules, rel, False):
            yield Skipped(path, f"{special_kind(st.st_mode)}: not read")

    def _escapes(self, path: Path) -> str | None:
        """The real path of a symlink that leads outside the walked root (None: it stays
        inside, or outside links are followed)."""
        if self.follow_outside:
            return None
        real = os.path.realpath(path)
        return None if inside(real, self._real_root) else real

    def _excluded(self, rules: _Rules, rel: str, is_dir: bool) -> bool:
        if not is_dir and _EDITOR.fullmatch(rel.rpartition("/")[2]):
            return True
        if self.exclude and self.exclude.match_file(rel + "/" if is_dir else rel):
            return True
        return rules.ignored(rel, is_dir)

    def _file(self, path: Path, root: Path, rel: str, st: os.stat_result) -> Candidate | Skipped:
        kind = special_kind(st.st_mode)
        if kind:  # a FIFO or device named as a root
            return Skipped(path, f"{kind}: not read")
        # The same file reached twice (a symlinked folder inside the root): indexed once.
        first = self._seen.setdefault(_key(st), path)
        if first != path:
            return Skipped(path, f"same file as {first}")
        limit = size_limit(rel, self.max_size)
        if st.st_size > limit:
            return Skipped(path, f"too large ({st.st_size} bytes > {limit})")
        return Candidate(path, root, rel, st.st_size, st.st_mtime_ns)


_EDITOR = re.compile("|".join(fnmatch.translate(p) for p in EDITOR_FILES))


def _outermost(rels: Sequence[str]) -> list[str]:
    """Sorted paths without those inside another of them."""
    chosen = set(rels)
    return sorted(
        rel for rel in chosen if not any(rel[:i] in chosen for i, c in enumerate(rel) if c == "/")
    )


def _key(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


@dataclass
class WalkOptions:
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    max_size: int = DEFAULT_MAX_SIZE
    types: str = "notes"  # files.TYPES: "code" adds source code to notes and documents
    # Index files reached by symlinks whose real path leaves the root (default: skipped).
    follow_outside: bool = False

    def walker(self) -> Walker:
        return Walker(self.include, self.exclude, self.max_size, self.types, self.follow_outside)

"""The index file: one SQLite database with the sqlite-vec extension, in WAL mode.

Tables: `meta` (what the vectors mean: model, task, dim, quantization, bit order, chunking),
`roots` (indexed folders and their walk options), `files` (one row per indexed file, with
its content hash), `chunks` (text, line range, heading path and the model's whole vector in
float16), `vec_blocks` and `vec_live`, the chunks' vectors at the index's dim and their sign
bits packed 1024 chunks a row for numpy scans (blocks.py), `chunks_fts`, the FTS5 lexical
index of each chunk's title, heading path and text (lexical.py), and `file_tags` (each
file's tags, for search filters; a file's date is in `files`).

Rescoring reads a few hundred vectors by chunk id from `chunks` (a rowid lookup); scans read
the blocks. Before schema 5 the sign bits were in a sqlite-vec vec0 table; sqlite-vec is still
loaded so such files can be upgraded.

Every change to one file is one transaction, so an interrupted run (even kill -9) leaves
the index as it was after the last finished file.

Paths are kept as the OS gives them. A name that is valid UTF-8 (every name an index held
before) is stored as that text; one with other bytes (`bad\xffname.md`, legal on Linux) is
stored as TEXT holding exactly its bytes (`db_text`: bound as bytes, `CAST(? AS TEXT)`), and
every connection reads TEXT back with `surrogateescape` (`_text`), so Python sees the
same str `os.fsdecode` gives and `os.fsencode` returns the exact bytes. No migration: no
stored value changes meaning. Texts (titles, chunks) are Unicode: a lone surrogate in one
becomes U+FFFD (`textsafe.clean`)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..errors import IndexBusy, IndexNotFound, JinalocError, SchemaTooNew
from ..notes import mtime_date
from ..textsafe import clean
from . import lexical
from .migrations import MIGRATIONS

if TYPE_CHECKING:  # numpy and the block scans load when vectors are read or written:
    import numpy as np  # a lexical search never does

    from .blocks import Part

log = logging.getLogger("jinaloc")


SCHEMA_VERSION = len(MIGRATIONS)
# The most candidates a coarse stage returns.
MAX_K = 4096
# How long a statement waits for another connection's write lock before "locked".
BUSY_MS = 30000
# How much of an index file SQLite maps into memory (SQLite caps it at its own maximum).
MMAP_BYTES = 1 << 34

_NO_EXTENSIONS = (
    "cannot load the sqlite-vec extension: this Python's sqlite3 does not support loadable"
    " extensions. Install pysqlite3-binary (`pip install pysqlite3-binary`, Linux x86_64), or"
    " use a Python built with extension support (python.org or Homebrew Python on macOS,"
    " `PYTHON_CONFIGURE_OPTS=--enable-loadable-sqlite-extensions` for pyenv)"
)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JinalocError(f"cannot create the index {path}: {e.strerror or e}") from None


def open_error(path: Path | None, e: Exception) -> JinalocError:
    """One line for SQLite's ways of refusing a file, advising what fits the cause: wait
    (locked), free space (full), make it writable (read-only, immutable), and a repair only
    when SQLite found the file damaged."""
    text = str(e)
    lower = text.lower()
    where = f"the index {path}" if path else "the index"
    if "malformed" in lower:
        from ..errors import IndexCorrupt

        return IndexCorrupt(path, text)
    if "locked" in lower or "busy" in lower:
        return JinalocError(
            f"{where} is locked by another process ({text})",
            "wait for it to finish, then run the command again",
        )
    if "full" in lower or "no space" in lower:
        return JinalocError(
            f"cannot write {where}: the disk is full ({text})",
            "free some space, then run the command again (nothing written before is lost)",
        )
    if any(w in lower for w in ("readonly", "read-only", "permission", "unable to open")):
        return JinalocError(
            f"cannot write {where} ({text})",
            "make it and its folder writable (chmod u+w; chattr -i for an immutable file)",
        )
    if "i/o error" in lower:
        return JinalocError(
            f"cannot read or write {where}: {text}",
            "check the disk (free space, errors in the system log), then run `jinaloc check`",
        )
    return JinalocError(
        f"cannot open {'index ' + str(path) if path else 'the index'}: {text}",
        "`jinaloc check` says whether it is a damaged index",
    )


@contextmanager
def writer_lock(path: Path, wait: bool = True, identity: tuple | None = None):
    """Hold the writer lock of the index at `path` (FILE.lock): one process at a time
    updates, repairs or replaces the file (searches go on meanwhile). `wait=False` refuses
    at once when another process holds it. `identity`: the file this process opened, which
    must still be the one at `path` (not removed or replaced meanwhile)."""
    from filelock import FileLock, Timeout

    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise IndexBusy(path) from None
        log.warning("%s is being updated by another process: waiting for it", path)
        lock.acquire()
    try:
        if identity is not None and file_identity(path) != identity:
            raise JinalocError(
                f"{path} was removed or replaced while this run had it open",
                "run the command again",
            )
        yield
    finally:
        lock.release()


def file_identity(path: Path) -> tuple | None:
    """(device, inode) of the file at `path`; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def claim_new(path: Path) -> tuple | None:
    """Create an empty index file at `path` if none is there: its identity when this
    process made it, None when it was there already (or cannot be made here: opening it
    then says why)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except OSError:
        return None
    return file_identity(path)


def new_file(path: Path, page_size: int) -> None:
    """An empty WAL-mode database file at `path` with this page size (fixed from then on)."""
    conn = _connect(str(path))
    try:
        conn.execute(f"PRAGMA page_size = {page_size}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("VACUUM")  # writes the header: the page size is the file's now
    finally:
        conn.close()


# SQLite's lock bytes in every database file (the unix VFS's PENDING, RESERVED and SHARED
# bytes): a process with the file open holds a read lock on them.
_LOCK_BYTES = (0x40000000, 512)


def remove_if_unused(path: Path, identity: tuple) -> bool:
    """Remove the index file at `path` (and its -wal and -shm) if it is still the file of
    `identity`, holds nothing (no meta, root, file or skip) and no other process has it
    open: under the writer lock (refused at once when held), with SQLite's lock bytes held
    so that none can start reading it meanwhile. This process must not have it open. The
    .lock stays: another process may be waiting on it. Returns whether it was removed."""
    try:
        import fcntl
    except ImportError:  # Windows: an open file cannot be removed there anyway
        return False
    try:
        with writer_lock(path, wait=False):
            if file_identity(path) != identity or not _unused(path):
                return False
            fd = os.open(path, os.O_RDWR)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, _LOCK_BYTES[1], _LOCK_BYTES[0])
            except OSError:
                os.close(fd)
                return False  # another process has it open
            try:
                for suffix in ("-wal", "-shm", ""):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            finally:
                os.close(fd)
            return True
    except (JinalocError, OSError):
        return False


def _unused(path: Path) -> bool:
    try:
        conn = _reader(path)
    except Exception:
        return False
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
        return all(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 0
            for t in ("meta", "roots", "files", "skips")
            if t in tables
        )
    except Exception:
        return False
    finally:
        conn.close()


def _reader(path: Path):
    """A read-only connection; on a read-only folder holding a WAL file (no -shm can be made
    there) an immutable one, as nothing can write the file then."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = _connect(uri, uri=True)
    try:
        conn.execute("PRAGMA user_version").fetchone()
    except Exception as e:
        if "readonly" not in str(e) and "unable to open" not in str(e):
            raise
        conn.close()
        conn = _connect(uri + "&immutable=1", uri=True)
    return conn


def db_text(path: str) -> str | bytes:
    """A path (or any OS name) as a parameter for `CAST(? AS TEXT)`: itself, or its exact
    bytes when it holds undecodable bytes (surrogate escapes SQLite's binding refuses)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape")
    return path


def _text(value: bytes) -> str:
    """TEXT as Python reads it here: UTF-8, other bytes (a stored OS name) as surrogates."""
    return value.decode("utf-8", "surrogateescape")


def _needs_vec(conn) -> bool:
    """Whether a file may hold sqlite-vec's vec0 table: schemas 1-4 (or unreadable)."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except Exception:  # a damaged file: as before, with the extension
        return True
    return 0 < version < 5


def _connect(path: str, uri: bool = False):
    """A connection that can load extensions (the standard sqlite3 if it can, else
    pysqlite3), with sqlite-vec loaded when the file is of a schema before 5 (its vec0 table
    is dropped by the upgrade; importing sqlite_vec imports numpy, which a lexical search
    never needs)."""
    modules = []
    import sqlite3

    modules.append(sqlite3)
    try:
        from pysqlite3 import dbapi2

        modules.append(dbapi2)
    except ImportError:
        pass
    for module in modules:
        conn = module.connect(path, isolation_level=None, check_same_thread=False, uri=uri)
        try:
            conn.enable_load_extension(True)
            if _needs_vec(conn):
                import sqlite_vec

                sqlite_vec.load(conn)
            conn.enable_load_extension(False)
        except (AttributeError, module.OperationalError):
            conn.close()
            continue
        conn.text_factory = _text
        # Block scans read the file through the page cache mapped, not copied into
        # SQLite's own (measured: 28 ms instead of 41 for 100k x 768 float vectors).
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        return conn
    raise JinalocError(_NO_EXTENSIONS)


@dataclass
class FileRecord:
    id: int
    path: str
    root: str
    rel: str
    hash: str
    size: int
    mtime_ns: int
    title: str
    has_meta: bool = True  # False: indexed before schema 3, tags and date not read yet


@dataclass
class NoteMeta:
    """What a file says about itself, kept per file for search filters."""

    tags: Sequence[str] = ()
    aliases: Sequence[str] = ()
    date: str | None = None  # its own date (front matter); None: the file's mtime counts

    def to_json(self) -> str:
        return json.dumps(
            {"tags": list(self.tags), "aliases": list(self.aliases), "date": self.date},
            ensure_ascii=False,
        )


# A file's date: its own (front matter), else its mtime's (the parameter).
_DATE = "date = coalesce(json_extract(meta, '$.date'), ?)"
_FILE_COLUMNS = "id, path, root, rel, hash, size, mtime_ns, title, meta IS NOT NULL"


@dataclass
class NewChunk:
    start_line: int
    end_line: int
    heading: Sequence[str]
    text: str
    tokens: int
    hash: str
    vector: np.ndarray  # the model's whole vector (full_dim,), L2-normalized
    page: int | None = None


@dataclass
class IndexedDocument:
    """One indexed file with its chunks' texts and stored vectors (for clustering, dedup)."""

    file_id: int
    path: str
    title: str
    texts: list[str]
    headings: list[list[str]]
    vectors: np.ndarray  # float32 (n_chunks, dim), L2-normalized, at the index's dim
    aliases: list[str] = field(default_factory=list)


@dataclass
class BlockCache:
    """Blocks kept in memory by a long-lived session, up to `budget` bytes (0: none).
    Blocks are immutable and their ids never reused, so an entry never goes stale. The
    unpacked chunks are kept too, until the file changes: SQLite's data_version tells of
    other connections' commits, `writes` (the Store counts them) of this one's."""

    budget: int = 0
    used: int = 0
    entries: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    writes: int = 0
    tail: dict[str, tuple[tuple[int, int], Part]] = field(default_factory=dict)

    def get(self, block: int, column: str):
        return self.entries.get((block, column))

    def put(self, block: int, column: str, ids: np.ndarray, array: np.ndarray) -> None:
        size = ids.nbytes + array.nbytes
        if self.used + size <= self.budget:
            self.entries[block, column] = (ids, array)
            self.used += size

    def forget_missing(self, present: set[int]) -> None:
        for key in [k for k in self.entries if k[0] not in present]:
            ids, array = self.entries.pop(key)
            self.used -= ids.nbytes + array.nbytes


class Store:
    def __init__(self, path: Path, conn):
        self.path = path
        self.conn = conn
        self._side = None  # a second connection, opened on first use
        # The file opened (device, inode): writes check it is still the one at `path`.
        self.identity = file_identity(path)
        # Blocks kept in memory between scans; a long-lived session raises the budget.
        self.cache = BlockCache()

    @classmethod
    def open(cls, path: Path, create: bool = True, readonly: bool = False) -> Store:
        """The index at `path`, migrated to this schema. `readonly`: a reader that writes
        nothing (works on read-only mounts) unless the schema needs upgrading first."""
        path = Path(path).expanduser()
        if not create and not path.is_file():
            raise IndexNotFound(path)
        # SQLite waits BUSY_MS for most locks, not for all of a connection's first steps
        # (another process removing a new, empty file holds them for a moment).
        deadline = time.monotonic() + BUSY_MS / 1000
        while True:
            try:
                return cls._open(path, create, readonly)
            except JinalocError as e:
                if "locked" not in e.message or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    @classmethod
    def _open(cls, path: Path, create: bool, readonly: bool) -> Store:
        conn = None
        try:
            if readonly:
                store = cls._open_readonly(path)
                if store is not None:
                    return store
            if create:
                _make_parent(path)
            conn = _connect(str(path))
            conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
            # Rows hold a 1-3 KB float vector: at the default 4 KB pages only one fits per
            # page (about half the file wasted); 16 KB pages waste a few percent. A new file
            # takes it; an existing one keeps its own.
            conn.execute("PRAGMA page_size = 16384")
            # WAL: searches read while an index run writes. NORMAL is safe against crashes
            # of the process; only an OS crash can lose the last commits, never consistency.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            store = cls(path, conn)
            store._migrate()
            store.identity = file_identity(path)
        except Exception as e:  # sqlite3 and pysqlite3 have distinct exception classes
            if conn is not None:
                conn.close()
            if isinstance(e, JinalocError):
                raise
            raise open_error(path, e) from None
        return store

    @classmethod
    def _open_readonly(cls, path: Path) -> Store | None:
        """A read-only connection, or None when the schema must be upgraded first."""
        conn = _reader(path)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise SchemaTooNew(path, version, SCHEMA_VERSION)
        if version < SCHEMA_VERSION:
            conn.close()
            if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
                raise JinalocError(
                    f"{path} has schema version {version} and needs upgrading to"
                    f" {SCHEMA_VERSION}, but it is read-only",
                    "open it once where it can be written",
                )
            return None
        conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        return cls(path, conn)

    def close(self) -> None:
        if self._side is not None:
            self._side.close()
        self.conn.close()

    def _side_conn(self):
        if self._side is None:
            self._side = _reader(self.path)
            self._side.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        return self._side

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        self.cache.writes += 1  # what this connection wrote, data_version does not show

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(self.path, version, SCHEMA_VERSION)
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                # Re-read inside the write lock: another process may have just migrated.
                if self.conn.execute("PRAGMA user_version").fetchone()[0] != number:
                    continue
                MIGRATIONS[number](self.conn)
                self.conn.execute(f"PRAGMA user_version = {number + 1}")

    def state(self) -> tuple[int, int]:
        """Changes whenever the file does: a commit of another connection (SQLite's
        data_version) or of this one (which data_version does not show)."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0], self.cache.writes

    # meta

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta"))

    def set_meta(self, values: dict[str, object]) -> None:
        """Record what the vectors mean (`dim`; `full_dim`: of the vectors chunks keep)."""
        with self.transaction():
            self._write_meta(values)

    def _write_meta(self, values: dict[str, object]) -> None:
        self.conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, str(v)) for k, v in values.items() if v is not None],
        )

    @property
    def dim(self) -> int | None:
        value = self.meta().get("dim")
        return int(value) if value else None

    @property
    def full_dim(self) -> int | None:
        meta = self.meta()
        value = meta.get("full_dim") or meta.get("dim")
        return int(value) if value else None

    def redim(self, dim: int) -> int:
        """The index's vectors again at `dim` (at most full_dim), from the vectors chunks
        keep, in one transaction: readers see the old dim until it commits. Returns the
        blocks written."""
        from . import blocks

        with self.transaction():
            written = blocks.rebuild(self.conn, dim)
            self._write_meta({"dim": dim})
        return written

    # roots

    def set_root(self, path: str, options: dict) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO roots(path, options, indexed_at) VALUES (CAST(? AS TEXT), ?, ?)"
                " ON CONFLICT(path) DO UPDATE SET options = excluded.options,"
                " indexed_at = excluded.indexed_at",
                (db_text(path), json.dumps(options), time.time()),
            )

    def skips(self) -> dict[str, tuple[int, int, str]]:
        """Files found unreadable before: path -> (size, mtime_ns, reason)."""
        rows = self.conn.execute("SELECT path, size, mtime_ns, reason FROM skips")
        return {path: (size, mtime, reason) for path, size, mtime, reason in rows}

    def set_skips(self, found: Sequence[tuple[str, int, int, str]], gone: Iterable[str]) -> None:
        """Remember newly unreadable files; forget those readable or gone now."""
        with self.transaction():
            self.conn.executemany(
                "INSERT OR REPLACE INTO skips(path, size, mtime_ns, reason)"
                " VALUES (CAST(? AS TEXT), ?, ?, ?)",
                [(db_text(p), size, mtime, clean(why)) for p, size, mtime, why in found],
            )
            self.conn.executemany(
                "DELETE FROM skips WHERE path = CAST(? AS TEXT)", [(db_text(p),) for p in gone]
            )

    def remove_root(self, path: str) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM roots WHERE path = CAST(? AS TEXT)", (db_text(path),))

    def roots(self) -> dict[str, dict]:
        rows = self.conn.execute("SELECT path, options FROM roots ORDER BY path")
        return {path: json.loads(options) for path, options in rows}

    # files

    def files_under(self, root: str) -> dict[str, FileRecord]:
        """Indexed files inside `root` (by path prefix, so nested roots overlap correctly;
        compared as bytes, as the OS names them)."""
        prefix = (root.rstrip("/") + "/").encode("utf-8", "surrogateescape")
        rows = self.conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE substr(CAST(path AS BLOB), 1, ?) = ?",
            (len(prefix), prefix),
        )
        return {r[1]: FileRecord(*r) for r in rows}

    def file(self, path: str) -> FileRecord | None:
        row = self.conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE path = CAST(? AS TEXT)",
            (db_text(path),),
        ).fetchone()
        return FileRecord(*row) if row else None

    def touch_file(self, file_id: int, size: int, mtime_ns: int) -> None:
        with self.transaction():
            self.conn.execute(
                f"UPDATE files SET size = ?, mtime_ns = ?, {_DATE} WHERE id = ?",
                (size, mtime_ns, mtime_date(mtime_ns), file_id),
            )

    def move_file(
        self, file_id: int, path: str, root: str, rel: str, size: int, mtime_ns: int
    ) -> None:
        """A renamed or moved file keeps its chunks and vectors."""
        with self.transaction():
            self.conn.execute(
                "UPDATE files SET path = CAST(? AS TEXT), root = CAST(? AS TEXT),"
                f" rel = CAST(? AS TEXT), size = ?, mtime_ns = ?, {_DATE} WHERE id = ?",
                (*map(db_text, (path, root, rel)), size, mtime_ns, mtime_date(mtime_ns), file_id),
            )

    def remove_file(self, file_id: int) -> None:
        with self.transaction():
            self._delete_chunks(file_id)
            self.conn.execute("DELETE FROM files WHERE id = ?", (file_id,))

    def _delete_chunks(self, file_id: int) -> None:
        from . import blocks

        self.conn.execute(lexical.DELETE_FILE_SQL, (file_id,))
        self.conn.execute(lexical.FILE_DELETE_SQL, (file_id,))
        blocks.release(self.conn, file_id)
        self.conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))

    def write_file(
        self,
        path: str,
        root: str,
        rel: str,
        hash: str,
        size: int,
        mtime_ns: int,
        title: str,
        chunks: Sequence[NewChunk],
        meta: NoteMeta | None = None,
    ) -> int:
        """Insert or replace one file with all its chunks, atomically. Returns its id."""
        import numpy as np

        from . import blocks

        dim, full = self.dim, self.full_dim
        for c in chunks:
            if np.shape(c.vector) != (full,):
                raise ValueError(f"vector of shape {np.shape(c.vector)}: this index keeps {full}")
        title = clean(title)  # from a file name, it may hold undecodable bytes
        path, root, rel = map(db_text, (path, root, rel))
        with self.transaction():
            row = self.conn.execute(
                "SELECT id FROM files WHERE path = CAST(? AS TEXT)", (path,)
            ).fetchone()
            values = (root, rel, hash, size, mtime_ns, title, sum(c.tokens for c in chunks))
            if row:
                file_id = row[0]
                self._delete_chunks(file_id)
                self.conn.execute(
                    "UPDATE files SET root = CAST(? AS TEXT), rel = CAST(? AS TEXT), hash = ?,"
                    " size = ?, mtime_ns = ?, title = ?, tokens = ?, indexed_at = ? WHERE id = ?",
                    (*values, time.time(), file_id),
                )
            else:
                file_id = self.conn.execute(
                    "INSERT INTO files(path, root, rel, hash, size, mtime_ns, title, tokens,"
                    " indexed_at) VALUES (CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT),"
                    " ?, ?, ?, ?, ?, ?)",
                    (path, *values, time.time()),
                ).lastrowid
            for seq, c in enumerate(chunks):
                heading, text = [clean(h) for h in c.heading], clean(c.text)
                chunk_id = self.conn.execute(
                    "INSERT INTO chunks(file_id, seq, start_line, end_line, heading, text, tokens,"
                    " hash, full, page) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        file_id,
                        seq,
                        c.start_line,
                        c.end_line,
                        json.dumps(heading, ensure_ascii=False),
                        text,
                        c.tokens,
                        c.hash,
                        blocks.full_blob(c.vector),
                        c.page,
                    ),
                ).lastrowid
                self.conn.execute(
                    lexical.INSERT_SQL, (chunk_id, *lexical.index_fields(title, heading, text))
                )
            if chunks:
                fields = lexical.file_fields(title, [c.text for c in chunks])
                self.conn.execute(lexical.FILE_INSERT_SQL, (file_id, *fields))
            self._set_meta(file_id, meta or NoteMeta(), mtime_ns)
            blocks.pack(self.conn, dim)
        return file_id

    def set_file_meta(self, file_id: int, meta: NoteMeta, mtime_ns: int) -> None:
        """Record a file's tags and date (a file re-read for them; its chunks stay)."""
        with self.transaction():
            self._set_meta(file_id, meta, mtime_ns)

    def _set_meta(self, file_id: int, meta: NoteMeta, mtime_ns: int) -> None:
        self.conn.execute(
            "UPDATE files SET meta = ?, date = ? WHERE id = ?",
            (clean(meta.to_json()), meta.date or mtime_date(mtime_ns), file_id),
        )
        self.conn.execute("DELETE FROM file_tags WHERE file_id = ?", (file_id,))
        self.conn.executemany(
            "INSERT OR IGNORE INTO file_tags(file_id, tag) VALUES (?, ?)",
            [(file_id, clean(tag.lower())) for tag in meta.tags],
        )

    def files_matching(
        self, tags: Sequence[str] = (), since: str | None = None, before: str | None = None
    ) -> list[int]:
        """Ids of files with every tag (case-insensitive; a nested tag `a/b` has tag `a`),
        dated on or after `since` and before `before` (YYYY-MM-DD)."""
        where, args = [], []
        for tag in tags:
            tag = tag.strip().lstrip("#").rstrip("/").lower()
            where.append(
                "id IN (SELECT file_id FROM file_tags WHERE tag = ? OR substr(tag, 1, ?) = ?)"
            )
            args += [tag, len(tag) + 1, tag + "/"]
        if since:
            where.append("date >= ?")
            args.append(since)
        if before:
            where.append("date < ?")
            args.append(before)
        sql = "SELECT id FROM files" + (" WHERE " + " AND ".join(where) if where else "")
        return [r[0] for r in self.conn.execute(sql, args)]

    def vectors_for_hashes(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Kept (full) vectors of chunks whose embedded text has one of these hashes."""
        from . import blocks

        rows = self.conn.execute(
            "SELECT hash, full FROM chunks WHERE hash IN (SELECT value FROM json_each(?))",
            (json.dumps(list(set(hashes))),),
        ).fetchall()
        vectors = blocks.full_vectors([blob for _, blob in rows])
        return {h: v for (h, _), v in zip(rows, vectors, strict=True)}

    # reading for search and other commands

    def file_paths(self) -> list[tuple[int, str, str]]:
        """(id, path, rel) of every indexed file."""
        return self.conn.execute("SELECT id, path, rel FROM files ORDER BY path").fetchall()

    def knn_bits(
        self,
        query: np.ndarray,
        k: int,
        file_ids: Sequence[int] | None = None,
        exclude: Sequence[int] = (),
    ) -> list[int]:
        """Chunk ids of the k nearest sign-bit vectors by Hamming distance, nearest first."""
        from . import blocks

        return blocks.coarse(
            self.conn, self.cache, query, self.dim or 0, min(k, MAX_K), file_ids, exclude
        )

    def lexical(
        self, query: str, k: int, file_ids: Sequence[int] | None = None, side: bool = False
    ) -> list[tuple[int, int, float]]:
        """The top k (chunk id, file id, -bm25) for a user query ([] when it has no word).
        `side`: on a second connection, so another thread can run the vector stage on the
        first meanwhile (SQLite runs both at once; WAL readers see the same commit)."""
        conn = self._side_conn() if side else self.conn
        hits = lexical.search(conn, query, k, file_ids)
        if not hits:
            return []
        files = dict(
            conn.execute(
                "SELECT id, file_id FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps([c for c, _ in hits]),),
            )
        )
        return [(c, files[c], s) for c, s in hits if c in files]

    def lexical_files(
        self, query: str, k: int, file_ids: Sequence[int] | None = None, side: bool = False
    ) -> list[tuple[int, float]]:
        """The top k (file id, -bm25) for a user query over whole files (files_fts)."""
        conn = self._side_conn() if side else self.conn
        return lexical.search(conn, query, k, file_ids, files=True)

    def first_chunks(self, file_ids: Sequence[int]) -> dict[int, int]:
        """{file id: its first chunk's id}."""
        return dict(
            self.conn.execute(
                "SELECT file_id, min(id) FROM chunks WHERE file_id IN"
                " (SELECT value FROM json_each(?)) GROUP BY file_id",
                (json.dumps(list(file_ids)),),
            )
        )

    def lexical_too_common(self, query: str) -> bool:
        """Whether `lexical` found nothing because each word of the query is in most chunks."""
        return lexical.too_common(self.conn, query)

    def scores(self, query: np.ndarray, chunk_ids: Sequence[int]) -> list[tuple[int, int, float]]:
        """(chunk id, file id, cosine similarity) of the given chunks."""
        import numpy as np

        from . import blocks

        rows = self.conn.execute(
            "SELECT id, file_id, full FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(chunk_ids)),),
        ).fetchall()
        scores = blocks.at_dim([r[2] for r in rows], self.dim or 0) @ np.asarray(
            query, dtype=np.float32
        )
        return [(c, f, float(s)) for (c, f, _), s in zip(rows, scores, strict=True)]

    def exact(
        self,
        query: np.ndarray,
        k: int,
        per_file: bool,
        file_ids: Sequence[int] | None = None,
        exclude: Sequence[int] = (),
    ) -> list[tuple[int, int, float]]:
        """The top k (chunk id, file id, similarity) by a full float scan; with `per_file`,
        only each file's best chunk."""
        from . import blocks

        return blocks.exact(
            self.conn, self.cache, query, self.dim or 0, k, per_file, file_ids, exclude
        )

    def chunk_details(self, chunk_ids: Sequence[int]) -> dict[int, dict]:
        """Path, root, title, line range, heading path and text of chunks, by id."""
        rows = self.conn.execute(
            "SELECT c.id, f.path, f.rel, f.root, f.title, c.start_line, c.end_line, c.heading,"
            " c.text, c.page, f.date, f.meta FROM chunks c JOIN files f ON f.id = c.file_id"
            " WHERE c.id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(chunk_ids)),),
        )
        keys = ("path", "rel", "root", "title", "start_line", "end_line", "heading", "text", "page")
        out = {}
        for chunk_id, *values, date, meta in rows:
            detail = dict(zip(keys, values, strict=True))
            detail["heading"] = json.loads(detail["heading"])
            detail["date"] = date
            detail["tags"] = json.loads(meta)["tags"] if meta else []
            out[chunk_id] = detail
        return out

    def file_vectors(self, file_id: int) -> np.ndarray:
        """The stored float vectors of one file's chunks, in order: (n, dim)."""
        from . import blocks

        rows = self.conn.execute(
            "SELECT full FROM chunks WHERE file_id = ? ORDER BY seq", (file_id,)
        ).fetchall()
        return blocks.at_dim([r[0] for r in rows], self.dim or 0)

    def iter_documents(self, paths: Iterable[str] | None = None) -> Iterator[IndexedDocument]:
        """Every indexed file (or those at `paths`, absolute) with its chunk texts and
        stored vectors, ordered by path. Reads one file at a time."""
        from . import blocks

        dim = self.dim or 0
        files = self.conn.execute("SELECT id, path, title, meta FROM files ORDER BY path")
        files = files.fetchall()
        if paths is not None:  # compared here: a JSON list cannot hold undecodable names
            wanted = set(paths)
            files = [f for f in files if f[1] in wanted]
        for file_id, path, title, meta in files:
            rows = self.conn.execute(
                "SELECT text, heading, full FROM chunks WHERE file_id = ? ORDER BY seq",
                (file_id,),
            ).fetchall()
            yield IndexedDocument(
                file_id,
                path,
                title,
                [r[0] for r in rows],
                [json.loads(r[1]) for r in rows],
                blocks.at_dim([r[2] for r in rows], dim),
                json.loads(meta)["aliases"] if meta else [],
            )

    def chunk_ids(self, file_id: int) -> list[int]:
        """A file's chunk ids in order."""
        rows = self.conn.execute("SELECT id FROM chunks WHERE file_id = ? ORDER BY seq", (file_id,))
        return [r[0] for r in rows]

    def chunk_vectors_by_file(self):
        """A cursor over (chunk id, file id, kept vector blob) of every chunk, by file."""
        return self.conn.execute("SELECT id, file_id, full FROM chunks ORDER BY file_id, seq")

    def counts(self) -> dict[str, int]:
        files, tokens = self.conn.execute(
            "SELECT count(*), coalesce(sum(tokens), 0) FROM files"
        ).fetchone()
        chunks = self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return {"files": files, "chunks": chunks, "tokens": tokens}

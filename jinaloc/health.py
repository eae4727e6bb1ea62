"""Checking an index file and repairing it without re-embedding what is intact.

`check` runs SQLite's integrity check and compares the tables that must agree (files and
their chunks, the vector blocks and the chunks they hold, each chunk's lexical row, vector
sizes). `repair` fixes what it found: a damaged file is salvaged row by row into a fresh one
(the original is kept beside it), orphan rows are dropped, the vector blocks and the lexical
table are rebuilt from the vectors and texts chunks keep (no model), and files whose rows
were lost or broken are dropped so that the next update re-embeds them, and only them."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import blocks, lexical
from .store import Store, open_error

TABLES = ("meta", "roots", "files", "chunks")
# Rows read per salvage step; a step that fails is split until the bad rows are found.
SALVAGE_STEP = 512


@dataclass
class Problem:
    kind: str
    count: int
    detail: str = ""

    def to_json(self) -> dict:
        return {"kind": self.kind, "count": self.count, "detail": self.detail}


@dataclass
class Repair:
    salvaged: bool = False
    backup: str | None = None
    rows_lost: int = 0
    files_dropped: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "salvaged": self.salvaged,
            "backup": self.backup,
            "rows_lost": self.rows_lost,
            "files_dropped": self.files_dropped,
            "fixed": self.fixed,
        }


def integrity(store: Store, quick: bool = False, tables=None) -> list[str]:
    """SQLite's own check (of the whole file, or of `tables` and their indexes): [] when
    sound, else its first messages."""
    pragma = "quick_check" if quick else "integrity_check"
    rows: list[str] = []
    try:
        for target in tables or [None]:
            arg = f"({target})" if target else "(20)"
            rows += [r[0] for r in store.conn.execute(f"PRAGMA {pragma}{arg}")]
    except Exception as e:  # a header too damaged to run the check
        return [str(e)]
    return [r for r in rows if r != "ok"]


def check(store: Store) -> list[Problem]:
    """Everything wrong with the index, [] when nothing is."""
    messages = integrity(store)
    if messages:
        return [Problem("integrity", len(messages), "; ".join(messages[:3]))]
    problems = []
    dim, full = store.dim, store.full_dim
    queries = {
        "chunks without a file": "SELECT count(*) FROM chunks"
        " WHERE file_id NOT IN (SELECT id FROM files)",
        "files without chunks": "SELECT count(*) FROM files"
        " WHERE id NOT IN (SELECT file_id FROM chunks)",
    }
    if dim:
        ids, bits, vectors = blocks.row_sizes(dim)
        queries |= {
            "vectors of the wrong size": "SELECT count(*) FROM chunks"
            f" WHERE full IS NULL OR length(full) != {2 * full}",
            "blocks of the wrong size": "SELECT count(*) FROM vec_blocks"
            f" WHERE length(ids) != {ids} OR length(bits) != {bits}"
            f" OR length(vectors) != {vectors}",
            "blocks without their live list": "SELECT count(*) FROM vec_blocks"
            " WHERE id NOT IN (SELECT id FROM vec_live)",
        }
    for kind, sql in queries.items():
        n = store.conn.execute(sql).fetchone()[0]
        if n:
            problems.append(Problem(kind, n))
    if dim and not problems:
        packed = set(store.conn.execute("SELECT id, slot FROM chunks WHERE slot IS NOT NULL"))
        wrong = len(packed ^ blocks.live_slots(store.conn))
        if wrong:
            problems.append(Problem("packed chunks out of step with the blocks", wrong))
    chunks = store.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    fts = store.conn.execute(f"SELECT count(*) FROM {lexical.TABLE}").fetchone()[0]
    if fts != chunks:
        problems.append(Problem("lexical rows out of step", abs(fts - chunks)))
    files = store.conn.execute("SELECT count(DISTINCT file_id) FROM chunks").fetchone()[0]
    file_rows = store.conn.execute(f"SELECT count(*) FROM {lexical.FILES_TABLE}").fetchone()[0]
    if file_rows != files:
        problems.append(Problem("lexical file rows out of step", abs(file_rows - files)))
    return problems


def repair(path: Path) -> Repair:
    """Fix the index at `path` in place (see the module's docstring)."""
    result = Repair()
    try:
        with Store.open(path, create=False) as store:
            damaged = bool(integrity(store))
    except Exception:
        damaged = True
    if damaged:
        _salvage(path, result)
    with Store.open(path, create=False) as store:
        _fix_tables(store, result)
    return result


def _salvage(path: Path, result: Repair) -> None:
    """Copy every readable row into a fresh file, keep the damaged one as `.corrupt`."""
    fresh = path.with_name(path.name + ".salvage")
    for p in (fresh, Path(f"{fresh}-wal"), Path(f"{fresh}-shm")):
        p.unlink(missing_ok=True)
    from .store import _connect

    # Not store._reader: it reads the file's header, which may be what is damaged.
    old = _connect(f"file:{path}?mode=ro", uri=True)
    with Store.open(fresh) as new:  # the current schema, empty
        for table in TABLES:
            columns = _columns(new, table)
            rows, lost = _readable_rows(old, table, columns)
            result.rows_lost += lost
            marks = ", ".join("?" * len(columns))
            with new.transaction():
                new.conn.executemany(
                    f"INSERT OR IGNORE INTO {table}({', '.join(columns)}) VALUES ({marks})", rows
                )
    old.close()
    backup = path.with_name(path.name + ".corrupt")
    shutil.copyfile(path, backup)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(fresh, path)
    result.salvaged, result.backup = True, str(backup)


def _columns(store: Store, table: str) -> list[str]:
    return [r[1] for r in store.conn.execute(f"PRAGMA table_info({table})")]


def _readable_rows(conn, table: str, columns: list[str]) -> tuple[list[tuple], int]:
    """The rows SQLite can still read, by rowid ranges split around damage; and how many
    rowids in the range could not be read."""
    select = f"SELECT {', '.join(columns)} FROM {table}"
    try:
        return conn.execute(select).fetchall(), 0
    except Exception:
        pass
    try:
        low, high = conn.execute(f"SELECT min(rowid), max(rowid) FROM {table}").fetchone()
    except Exception:
        return [], 0
    if low is None:
        return [], 0
    rows: list[tuple] = []
    lost = 0
    pending = [(low, high)]
    while pending:
        a, b = pending.pop()
        try:
            rows += conn.execute(f"{select} WHERE rowid BETWEEN ? AND ?", (a, b)).fetchall()
        except Exception:
            if a == b:
                lost += 1
            else:
                mid = (a + b) // 2
                pending += [(a, mid), (mid + 1, b)]
    return rows, lost


def _fix_tables(store: Store, result: Repair) -> None:
    conn = store.conn
    dim, full = store.dim, store.full_dim
    with store.transaction():
        n = conn.execute("DELETE FROM chunks WHERE file_id NOT IN (SELECT id FROM files)").rowcount
        if n:
            result.fixed.append(f"{n} chunks without a file removed")
        broken = conn.execute(
            "SELECT DISTINCT f.id, f.path FROM files f LEFT JOIN chunks c ON c.file_id = f.id"
            " WHERE c.id IS NULL"
            + (f" OR c.full IS NULL OR length(c.full) != {2 * full}" if dim else "")
        ).fetchall()
        for file_id, file_path in broken:
            conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
            conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
            result.files_dropped.append(file_path)
        if dim:
            written = blocks.rebuild(conn, dim)
            result.fixed.append(f"vector blocks rebuilt ({written} of {blocks.BLOCK} chunks)")
        result.fixed.append(f"lexical table rebuilt ({lexical.rebuild(conn)} rows)")


def vacuum(store: Store) -> tuple[int, int]:
    """Rewrite the file without free pages, the lexical index merged: (bytes before, after)."""
    before = _size(store.path)
    try:
        for table in (lexical.TABLE, lexical.FILES_TABLE):
            store.conn.execute(f"INSERT INTO {table}({table}) VALUES ('optimize')")
        store.conn.execute("VACUUM")
        store.conn.execute("PRAGMA optimize")
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except Exception as e:
        raise open_error(store.path, e) from None
    return before, _size(store.path)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())

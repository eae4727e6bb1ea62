"""Checking an index file and repairing it without losing what can be read.

`check` runs SQLite's integrity check and compares what must agree: files and their chunks
(every chunk of a file, in order), each chunk's text with the sha256 of what was embedded,
each vector's length and norm, the vector blocks and each chunk's lexical row.

`repair` works under the writer lock. A file SQLite finds damaged is copied aside whole
(FILE.corrupt, with its -wal) and its rows are salvaged into a fresh file: what SQLite
still reads (by rowid ranges split around the damage), and what the damaged pages still
hold (salvage.py reads every table leaf page without SQLite's b-trees). Rows of no use are
dropped and counted: chunks without their file, chunks whose text no longer matches its
hash, vectors of the wrong size or norm. Every file that lost any chunk is marked to be
read again (hash and size cleared), so the next update re-embeds exactly what was lost and
reuses the vectors of what was kept. Without a sound record of what the vectors mean (the
meta), nothing is replaced: the repair stops and says how to rebuild. The vector blocks and
the lexical table are rebuilt from what chunks keep (no model)."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..chunking import embed_text, table_headers
from ..errors import IndexUnrepairable
from . import blocks, lexical, salvage
from .meta import CHUNK_FORMAT, IndexMeta
from .plan import sha256
from .store import Store, _connect, open_error, writer_lock

# The tables a salvage copies; the others are derived from them (lexical, tags, and the
# blocks, copied only to check the chunks' vectors against, then rebuilt).
TABLES = ("meta", "roots", "skips", "files", "chunks", "vec_blocks")
# Meta keys without which the vectors mean nothing (full_dim is read off the vectors).
REQUIRED_META = ("model", "model_ref", "backend", "quant", "dim", "chunk_tokens")
# A stored unit vector's norm is off by far less than this (float16 rounding).
NORM_TOLERANCE = 0.01
# A file marked to be read again (and re-embedded): its hash and size cleared.
MARKED = "{0}hash = '' AND {0}size = -1"


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
    # Rows copied into the fresh file, by table (salvage only).
    rows_kept: dict[str, int] = field(default_factory=dict)
    # Rows dropped, by reason; pages and cells nothing could be read from.
    rows_dropped: dict[str, int] = field(default_factory=dict)
    pages_unreadable: int = 0
    cells_unreadable: int = 0
    # Files that lost chunks (or whose chunks were dropped): the next update reads them again.
    files_to_reembed: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    @property
    def rows_lost(self) -> int:
        return sum(self.rows_dropped.values())

    def to_json(self) -> dict:
        return {
            "salvaged": self.salvaged,
            "backup": self.backup,
            "rows_kept": self.rows_kept,
            "rows_dropped": self.rows_dropped,
            "rows_lost": self.rows_lost,
            "pages_unreadable": self.pages_unreadable,
            "cells_unreadable": self.cells_unreadable,
            "files_to_reembed": self.files_to_reembed,
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
    conn = store.conn
    problems = []
    dim, full = store.dim, store.full_dim
    queries = {
        "chunks without a file": "SELECT count(*) FROM chunks"
        " WHERE file_id NOT IN (SELECT id FROM files)",
        "files to re-embed (run `index`)": f"SELECT count(*) FROM files WHERE {MARKED.format('')}",
    }
    if dim:
        ids, bits, vectors = blocks.row_sizes(dim)
        queries |= {
            "blocks of the wrong size": "SELECT count(*) FROM vec_blocks"
            f" WHERE length(ids) != {ids} OR length(bits) != {bits}"
            f" OR length(vectors) != {vectors}",
            "blocks without their live list": "SELECT count(*) FROM vec_blocks"
            " WHERE id NOT IN (SELECT id FROM vec_live)",
        }
    for kind, sql in queries.items():
        n = conn.execute(sql).fetchone()[0]
        if n:
            problems.append(Problem(kind, n))
    bad = bad_chunks(conn, full)
    for kind, chunk_ids in bad.items():
        if chunk_ids:
            problems.append(Problem(kind, len(chunk_ids)))
    incomplete = incomplete_files(conn, set().union(*bad.values()))
    if incomplete:
        problems.append(Problem("files missing chunks", len(incomplete)))
    if dim and not problems:
        packed = set(conn.execute("SELECT id, slot FROM chunks WHERE slot IS NOT NULL"))
        wrong = len(packed ^ blocks.live_slots(conn))
        if wrong:
            problems.append(Problem("packed chunks out of step with the blocks", wrong))
    chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    fts = conn.execute(f"SELECT count(*) FROM {lexical.TABLE}").fetchone()[0]
    if fts != chunks:
        problems.append(Problem("lexical rows out of step", abs(fts - chunks)))
    files = conn.execute("SELECT count(DISTINCT file_id) FROM chunks").fetchone()[0]
    file_rows = conn.execute(f"SELECT count(*) FROM {lexical.FILES_TABLE}").fetchone()[0]
    if file_rows != files:
        problems.append(Problem("lexical file rows out of step", abs(file_rows - files)))
    return problems


def bad_chunks(conn, full_dim: int | None) -> dict[str, set[int]]:
    """Chunks of no use, by reason: vectors of the wrong size or not of unit length (a
    damaged blob), texts that no longer match the sha256 of what was embedded (when the
    index's chunk format says how they were embedded). Read one file at a time."""
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    hashed = meta.get("chunk_format") == CHUNK_FORMAT
    dim = meta.get("dim", "")
    unlike = _unlike_packed(conn, int(dim)) if dim.isdigit() else set()
    bad: dict[str, set[int]] = {
        # Or unlike the copy a vector block holds: a flipped sign keeps the norm.
        "vectors of the wrong size or norm": set(),
        "chunks whose text does not match its hash": set(),
    }
    files = conn.execute(f"SELECT id, title, rel, meta FROM files WHERE NOT ({MARKED.format('')})")
    for file_id, title, rel, meta in files.fetchall():
        try:
            aliases = json.loads(meta)["aliases"] if meta else []
        except (ValueError, KeyError, TypeError):
            aliases = []
        rows = conn.execute(
            # As bytes: a damaged text may not be UTF-8 any more.
            "SELECT id, CAST(heading AS BLOB), CAST(text AS BLOB), hash, full FROM chunks"
            " WHERE file_id = ? ORDER BY seq",
            (file_id,),
        ).fetchall()
        earlier: list[str] = []
        for chunk_id, heading, text, hash, full in rows:
            if chunk_id in unlike or not _unit_vector(full, full_dim):
                bad["vectors of the wrong size or norm"].add(chunk_id)
            elif hashed and not _text_matches(title, aliases, rel, heading, text, hash, earlier):
                bad["chunks whose text does not match its hash"].add(chunk_id)
            earlier.append(text.decode("utf-8", "replace") if text else "")
    return bad


def _unlike_packed(conn, dim: int) -> set[int]:
    """Chunks whose vector differs from the copy their vector block holds (one of the two
    is damaged; the block is rebuilt, the chunk dropped: it cannot be told which)."""
    ids_bytes, _, vector_bytes = blocks.row_sizes(dim)
    unlike: set[int] = set()
    for block, ids, vectors in conn.execute("SELECT id, ids, vectors FROM vec_blocks").fetchall():
        if len(ids) != ids_bytes or len(vectors) != vector_bytes:
            continue  # a damaged block: rebuilt anyway
        slots = {
            block * blocks.BLOCK + i: int(c) for i, c in enumerate(np.frombuffer(ids, np.int64))
        }
        rows = conn.execute(
            "SELECT id, slot, full FROM chunks WHERE slot IN (SELECT value FROM json_each(?))",
            (json.dumps(list(slots)),),
        ).fetchall()
        rows = [r for r in rows if slots.get(r[1]) == r[0] and isinstance(r[2], bytes)]
        copies = np.frombuffer(vectors, np.float32).reshape(blocks.BLOCK, dim)
        for chunk_id, slot, full in rows:
            try:
                mine = blocks.at_dim([full], dim)[0]
            except ValueError:
                continue  # of the wrong size: found as such
            if np.abs(mine - copies[slot - block * blocks.BLOCK]).max() > 1e-5:
                unlike.add(chunk_id)
    return unlike


def _unit_vector(blob, full_dim: int | None) -> bool:
    if not isinstance(blob, bytes) or not full_dim or len(blob) != 2 * full_dim:
        return False
    norm = float(np.linalg.norm(np.frombuffer(blob, dtype=np.float16).astype(np.float32)))
    return abs(norm - 1) <= NORM_TOLERANCE


def _text_matches(title, aliases, rel, heading, text, hash, earlier: list[str]) -> bool:
    """Whether the chunk's stored text, embedded as the index embeds it, has its hash. A
    later piece of a split table was embedded after the table's header rows (not stored):
    the headers of the file's earlier chunks are tried too."""
    try:
        path = json.loads(heading.decode("utf-8"))
        text = text.decode("utf-8")
        if not isinstance(path, list):
            return False
        if sha256(embed_text(title, path, text, aliases, rel).encode()) == hash:
            return True
        if not text.lstrip().startswith("|"):
            return False
        headers = {h for e in earlier for h in table_headers(e)}
        return any(
            sha256(embed_text(title, path, f"{h}\n{text}", aliases, rel).encode()) == hash
            for h in headers
        )
    except (ValueError, TypeError, AttributeError):  # UnicodeError is a ValueError
        return False


def incomplete_files(conn, dropped: set[int] = frozenset()) -> list[tuple[int, str]]:
    """(id, path) of files that lost chunks: not numbered 0..n-1, tokens that do not add up
    to the file's, none at all; or some of theirs in `dropped`."""
    rows = conn.execute(
        "SELECT f.id, f.path, f.tokens, count(c.id), coalesce(sum(c.tokens), 0),"
        " coalesce(max(c.seq), -1), count(DISTINCT c.seq) FROM files f"
        f" LEFT JOIN chunks c ON c.file_id = f.id WHERE NOT ({MARKED.format('f.')}) GROUP BY f.id"
    ).fetchall()
    lost = set()
    if dropped:
        lost = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT file_id FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(sorted(dropped)),),
            )
        }
    return [
        (file_id, path)
        for file_id, path, tokens, n, total, top, distinct in rows
        if file_id in lost or n == 0 or top != n - 1 or distinct != n or total != tokens
    ]


def repair(path: Path, wait: bool = True) -> Repair:
    """Fix the index at `path` in place, under its writer lock (see the module's
    docstring). Raises IndexUnrepairable, leaving the file as it was, when what its vectors
    mean cannot be read."""
    path = Path(path)
    result = Repair()
    with writer_lock(path, wait):
        try:  # read-only: closing it must not checkpoint the -wal into a damaged file
            with Store.open(path, create=False, readonly=True) as store:
                damaged = bool(integrity(store))
        except Exception:
            damaged = True
        if damaged:
            _salvage(path, result)
        with Store.open(path, create=False) as store:
            _fix_tables(store, result)
    return result


def _backup_name(path: Path) -> Path:
    backup = path.with_name(path.name + ".corrupt")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.corrupt{n}")
        n += 1
    return backup


def _salvage(path: Path, result: Repair) -> None:
    """Every readable row into a fresh file that replaces the damaged one, which is kept
    (with its -wal) as FILE.corrupt. The caller holds the writer lock."""
    backup = _backup_name(path)
    wal = Path(f"{path}-wal")
    shutil.copyfile(path, backup)
    if wal.exists():
        shutil.copyfile(wal, f"{backup}-wal")
    fresh = path.with_name(path.name + ".salvage")
    for p in (fresh, Path(f"{fresh}-wal"), Path(f"{fresh}-shm")):
        p.unlink(missing_ok=True)
    try:
        with Store.open(fresh) as new:  # the current schema, empty
            columns = {t: _columns(new, t) for t in TABLES}
            rows = _read_rows(backup, columns, result)
            new.conn.execute("PRAGMA foreign_keys = OFF")  # orphans are dropped after
            with new.transaction():
                for table in TABLES:
                    marks = ", ".join("?" * len(columns[table]))
                    new.conn.executemany(
                        f"INSERT OR IGNORE INTO {table}({', '.join(c[0] for c in columns[table])})"
                        f" VALUES ({marks})",
                        rows[table].values(),
                    )
                    result.rows_kept[table] = len(rows[table])
                _settle_meta(new, path)
            new.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except BaseException:  # nothing replaced: the copies go
        for p in (fresh, Path(f"{fresh}-wal"), Path(f"{fresh}-shm"), backup, Path(f"{backup}-wal")):
            p.unlink(missing_ok=True)
        raise
    # The old -wal goes before the fresh file takes the name: its frames belong to the old
    # file, and SQLite would apply them to whatever file bears the name.
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(fresh, path)
    result.salvaged, result.backup = True, str(backup)


def _columns(store: Store, table: str) -> list[tuple[str, str, bool, bool]]:
    """(name, declared type, not null, integer primary key) of each column, in order."""
    return [
        (name, kind.upper(), bool(notnull), bool(pk) and kind.upper() == "INTEGER")
        for _, name, kind, notnull, _, pk in store.conn.execute(f"PRAGMA table_info({table})")
    ]


def _read_rows(backup: Path, columns: dict, result: Repair) -> dict[str, dict]:
    """The rows of each table, by key: what SQLite still reads first, then what the page
    scan finds that SQLite could not (its tables told apart by the rows' shapes)."""
    rows: dict[str, dict] = {t: {} for t in TABLES}
    try:
        conn = _connect(f"file:{quote(str(backup.resolve()))}?mode=ro", uri=True)
    except Exception:
        conn = None
    for table in TABLES:
        names = [c[0] for c in columns[table]]
        for row in _readable_rows(conn, table, names) if conn else []:
            rows[table].setdefault(row[0], tuple(row))
    if conn is not None:
        conn.close()
    Path(f"{backup}-shm").unlink(missing_ok=True)  # made by that reader
    data = backup.read_bytes()
    wal = Path(f"{backup}-wal")
    if wal.exists():
        data = salvage.with_wal(data, wal.read_bytes())
    found = salvage.scan(data)
    result.pages_unreadable = len(found.bad_pages)
    result.cells_unreadable = found.bad_cells
    paths = {row[1] for row in rows["files"].values()}
    for _, rowid, values in found.rows:
        # A record has every column its table had when it was written: one of the same
        # length first, a shorter one (columns added since) only if nothing else fits.
        exact = [t for t in TABLES if len(columns[t]) == len(values) and _fits(values, columns[t])]
        tables = exact or [t for t in TABLES if _fits(values, columns[t])]
        if len(tables) != 1:
            continue  # a derived table's row (blocks, lexical, schema), or ambiguous
        table = tables[0]
        shape = columns[table]
        row = [rowid if c[3] else v for c, v in zip(shape, _padded(values, shape), strict=True)]
        if table == "files" and row[1] in paths and row[0] not in rows[table]:
            continue  # a stale copy of a file SQLite still reads
        # Keyed by the id, or the text primary key (meta key, root path, skip path).
        rows[table].setdefault(row[0], tuple(row))
    return rows


def _padded(values: list, shape) -> list:
    return values + [None] * (len(shape) - len(values))


_TYPES = {"INTEGER": (int,), "TEXT": (str,), "BLOB": (bytes,), "REAL": (float, int)}


def _fits(values: list, shape) -> bool:
    """Whether a record read off a page can be a row of the table of these columns."""
    if not 0 < len(values) <= len(shape):
        return False
    for (_, kind, notnull, rowid_alias), value in zip(shape, _padded(values, shape), strict=True):
        if rowid_alias:
            if value is not None:
                return False
        elif value is None:
            if notnull:
                return False
        elif not isinstance(value, _TYPES.get(kind, (object,))):
            return False
    if shape[0][0] == "key":  # meta: only its own keys
        return values[0] in IndexMeta.__dataclass_fields__
    if shape[1][0] == "options":  # roots: walk options as a JSON object
        try:
            return isinstance(json.loads(values[1]), dict)
        except ValueError:
            return False
    return True


def _readable_rows(conn, table: str, columns: list[str]) -> list[tuple]:
    """The rows SQLite can still read, by rowid ranges split around damage."""
    select = f"SELECT {', '.join(columns)} FROM {table}"
    try:
        return conn.execute(select).fetchall()
    except Exception:
        pass
    try:
        low, high = conn.execute(f"SELECT min(rowid), max(rowid) FROM {table}").fetchone()
    except Exception:
        return []
    if low is None:
        return []
    rows: list[tuple] = []
    pending = [(low, high)]
    while pending:
        a, b = pending.pop()
        try:
            rows += conn.execute(f"{select} WHERE rowid BETWEEN ? AND ?", (a, b)).fetchall()
        except Exception:
            if a != b:
                mid = (a + b) // 2
                pending += [(a, mid), (mid + 1, b)]
    return rows


def _settle_meta(store: Store, path: Path) -> None:
    """Keep the salvaged meta if it says what the vectors mean, reading the kept dim off the
    vectors when that key was lost; else refuse (IndexUnrepairable)."""
    meta = store.meta()
    lengths = Counter(
        n for (n,) in store.conn.execute("SELECT length(full) FROM chunks WHERE full IS NOT NULL")
    )
    if lengths and "full_dim" not in meta:
        meta["full_dim"] = str(lengths.most_common(1)[0][0] // 2)
        store._write_meta({"full_dim": meta["full_dim"]})
    missing = [k for k in REQUIRED_META if not meta.get(k)]
    for key in ("dim", "chunk_tokens", "full_dim"):
        if meta.get(key) and not meta[key].isdigit():
            missing.append(key)
    if not missing and int(meta["dim"]) > int(meta.get("full_dim") or meta["dim"]):
        missing.append("dim")
    if missing:
        raise IndexUnrepairable(path, missing)


def _fix_tables(store: Store, result: Repair) -> None:
    conn = store.conn
    dim, full = store.dim, store.full_dim
    with store.transaction():
        n = conn.execute("DELETE FROM chunks WHERE file_id NOT IN (SELECT id FROM files)").rowcount
        if n:
            result.rows_dropped["chunks without a file"] = n
        bad = bad_chunks(conn, full)
        dropped = set().union(*bad.values())
        marked = incomplete_files(conn, dropped)
        for kind, chunk_ids in bad.items():
            if chunk_ids:
                conn.execute(
                    "DELETE FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(sorted(chunk_ids)),),
                )
                result.rows_dropped[kind] = len(chunk_ids)
        conn.executemany(
            "UPDATE files SET hash = '', size = -1 WHERE id = ?", [(i,) for i, _ in marked]
        )
        result.files_to_reembed = sorted(
            p for (p,) in conn.execute(f"SELECT path FROM files WHERE {MARKED.format('')}")
        )
        _rebuild_tags(conn)
        if dim:
            written = blocks.rebuild(conn, dim)
            result.fixed.append(f"vector blocks rebuilt ({written} of {blocks.BLOCK} chunks)")
        result.fixed.append(f"lexical table rebuilt ({lexical.rebuild(conn)} rows)")


def _rebuild_tags(conn) -> None:
    """file_tags again from each file's meta (tags lowercased as Store writes them)."""
    conn.execute("DELETE FROM file_tags")
    for file_id, meta in conn.execute(
        "SELECT id, meta FROM files WHERE meta IS NOT NULL"
    ).fetchall():
        try:
            tags = json.loads(meta)["tags"]
        except (ValueError, KeyError, TypeError):
            conn.execute("UPDATE files SET meta = NULL WHERE id = ?", (file_id,))
            continue  # NULL: the next update reads its tags again
        conn.executemany(
            "INSERT OR IGNORE INTO file_tags(file_id, tag) VALUES (?, ?)",
            [(file_id, str(t).lower()) for t in tags],
        )


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

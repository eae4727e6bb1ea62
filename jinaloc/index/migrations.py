"""The index file's schema migrations, one named function each (as llm's
embeddings_migrations.py has them), applied in order by `Store` in one transaction each;
`PRAGMA user_version` counts those applied. Every migration runs without a model. Never
edit one that has shipped: add the next."""

from __future__ import annotations

from ..notes import mtime_date
from . import lexical


def _script(conn, sql: str) -> None:
    for statement in sql.split(";"):
        if statement.strip():
            conn.execute(statement)


def m001_files_and_chunks(conn) -> None:
    """Schema 1: meta, roots, files and chunks (each with a float32 vector at the index dim)."""
    _script(
        conn,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE roots (
            path TEXT PRIMARY KEY,
            options TEXT NOT NULL DEFAULT '{}',  -- JSON: include, exclude, max_size
            indexed_at REAL
        );
        CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,  -- absolute
            root TEXT NOT NULL,
            rel TEXT NOT NULL,          -- relative to root, POSIX
            hash TEXT NOT NULL,         -- sha256 of the bytes
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            title TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            indexed_at REAL NOT NULL
        );
        CREATE INDEX files_hash ON files(hash);
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            start_line INTEGER NOT NULL,
            end_line INTEGER NOT NULL,
            heading TEXT NOT NULL,      -- JSON list, outermost first
            text TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            hash TEXT NOT NULL,         -- sha256 of the embedded text: equal texts share vectors
            embedding BLOB NOT NULL     -- float32[dim], L2-normalized
        );
        CREATE INDEX chunks_file ON chunks(file_id, seq);
        CREATE INDEX chunks_hash ON chunks(hash);
        """,
    )


def m002_lexical(conn) -> None:
    """Schema 2: the FTS5 table, filled from the stored chunk texts (no model needed)."""
    version = conn.execute("SELECT sqlite_version()").fetchone()[0]
    conn.execute(lexical.fts_schema(version))
    lexical.rebuild(conn, files=False)


def m003_note_meta(conn) -> None:
    """Schema 3: each file's date (front matter, else mtime), metadata (JSON: tags, aliases,
    the front matter date) and tags; the page of a chunk (PDF). Existing files get their
    mtime's date and a NULL meta, which the planner reads as "re-read for metadata": the
    chunk texts do not hold the front matter. Nothing is re-embedded for it."""
    conn.execute("ALTER TABLE files ADD COLUMN date TEXT")  # YYYY-MM-DD, local
    conn.execute("ALTER TABLE files ADD COLUMN meta TEXT")
    conn.execute("ALTER TABLE chunks ADD COLUMN page INTEGER")  # 1-based; NULL: no pages
    conn.execute(
        "CREATE TABLE file_tags (file_id INTEGER NOT NULL REFERENCES files(id)"
        " ON DELETE CASCADE, tag TEXT NOT NULL, PRIMARY KEY (file_id, tag)) WITHOUT ROWID"
    )  # tags lowercased (str.lower, so any script); the file's meta has them as written
    conn.execute("CREATE INDEX file_tags_tag ON file_tags(tag)")
    conn.execute("CREATE INDEX files_date ON files(date)")
    rows = conn.execute("SELECT id, mtime_ns FROM files").fetchall()
    conn.executemany(
        "UPDATE files SET date = ? WHERE id = ?", [(mtime_date(m), i) for i, m in rows]
    )


def m004_skips(conn) -> None:
    """Schema 4: files found unreadable, by size and mtime, so later runs do not read them
    again."""
    _script(
        conn,
        """
        CREATE TABLE skips (
            path TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            reason TEXT NOT NULL
        );
        """,
    )


def m005_blocks(conn) -> None:
    """Schema 5: each chunk keeps its vector in `full` (float16) and the vectors are packed
    into blocks (blocks.py) in place of the vec0 bit table. An older index keeps what it
    had, vectors at its dim: meta `full_dim` says so, and a re-dim can only go lower."""
    import numpy as np

    from . import blocks

    conn.execute("ALTER TABLE chunks ADD COLUMN full BLOB")  # float16[full_dim]
    conn.execute("ALTER TABLE chunks ADD COLUMN slot INTEGER")  # blocks.py; NULL: unpacked
    last = 0
    while True:
        rows = conn.execute(
            "SELECT id, embedding FROM chunks WHERE id > ? ORDER BY id LIMIT 4096", (last,)
        ).fetchall()
        if not rows:
            break
        conn.executemany(
            "UPDATE chunks SET full = ? WHERE id = ?",
            [(blocks.full_blob(np.frombuffer(e, dtype=np.float32)), i) for i, e in rows],
        )
        last = rows[-1][0]
    conn.execute("ALTER TABLE chunks DROP COLUMN embedding")
    conn.execute("DROP TABLE IF EXISTS vec_bits")
    for statement in blocks.SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    dim = conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
    if dim:
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('full_dim', ?)", dim)
        blocks.pack(conn, int(dim[0]))


def m006_stems(conn) -> None:
    """Schema 6: chunks_fts gains the `stems` column and files_fts (one row per file) comes
    (lexical.py): both built from the stored chunk texts and titles, no model needed."""
    lexical.recreate(conn)


def m007_reread_tags(conn) -> None:
    """Schema 7: inline #tags as Obsidian reads them (none inside links, anchors, URLs or
    code): every file's metadata is read again on the next update, without the model (a
    NULL meta is the planner's "re-read"); the old tags serve until then."""
    conn.execute("UPDATE files SET meta = NULL")


MIGRATIONS = [
    m001_files_and_chunks,
    m002_lexical,
    m003_note_meta,
    m004_skips,
    m005_blocks,
    m006_stems,
    m007_reread_tags,
]

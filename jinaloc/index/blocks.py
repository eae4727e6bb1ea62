"""How an index's vectors are laid out for scanning: chunks packed BLOCK at a time into
`vec_blocks` rows (chunk ids, sign bits and float32 vectors at the index's dim), scored in
numpy.

A chunk's own vector is `chunks.full`: the model's whole L2-normalized vector in float16.
Everything here derives from it (slice to the index's dim, renormalize: Matryoshka), so the
blocks can be rebuilt at another dim, or repaired, without a model. Chunks not in a block yet
(fewer than BLOCK since the last one was packed, or moved out when their block emptied) are
read from `chunks` directly.

Why blocks: fetching a row costs Python about 1.5 us, so a row per chunk scans 100k chunks in
150 ms; one 3 MB row per 1024 chunks reads at memory speed, and a packed bit matrix gives
a popcount scan that does not slow down with k as vec0's bit KNN does (README "Search at
scale"). A block never changes once written (`vec_live` marks its deleted chunks), so a
long-lived session may keep blocks in memory (`BlockCache`)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..vectors import matryoshka, pack_bits

if TYPE_CHECKING:
    from .store import BlockCache

BLOCK = 1024
# A block holding fewer live chunks than this is dissolved back into `chunks` (and repacked
# with newer ones), so deletions never leave the scan reading mostly dead slots.
MIN_LIVE = BLOCK // 2
# Blocks whose array is smaller than this are scanned several at a time (`_grouped`).
GROUP_BYTES = 1 << 20

SCHEMA = """
CREATE TABLE vec_blocks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a cached block stays valid
    ids BLOB NOT NULL,      -- int64[BLOCK]: the chunk in each slot
    bits BLOB NOT NULL,     -- uint64[BLOCK, words]: sign bits, LSB-first, zero-padded
    vectors BLOB NOT NULL   -- float32[BLOCK, dim], L2-normalized (last: bit scans skip it)
);
CREATE TABLE vec_live (
    id INTEGER PRIMARY KEY,  -- the block's
    live INTEGER NOT NULL,   -- slots whose chunk still exists
    files BLOB NOT NULL      -- int64[BLOCK]: each slot's file, 0 once its chunk is gone
);
CREATE INDEX chunks_slot ON chunks(slot);
"""


def full_blob(vector: np.ndarray) -> bytes:
    """How `chunks.full` stores a model's whole vector."""
    return np.asarray(vector, dtype=np.float16).tobytes()


def full_vectors(blobs: Sequence[bytes]) -> np.ndarray:
    """`chunks.full` values as a float32 matrix (n, full dim)."""
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    joined = np.frombuffer(b"".join(blobs), dtype=np.float16)
    return joined.reshape(len(blobs), -1).astype(np.float32)


def at_dim(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """The index's vectors of these chunks: their full vectors sliced and renormalized."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return matryoshka(full_vectors(blobs), dim)


def bit_words(vectors: np.ndarray) -> np.ndarray:
    """Sign bits as uint64 words per row (zero-padded), for XOR and popcount."""
    packed = pack_bits(vectors)
    pad = -packed.shape[-1] % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def row_sizes(dim: int) -> tuple[int, int, int]:
    """Bytes of a block's ids, bits and vectors at `dim` (what `pack` writes)."""
    words = bit_words(np.zeros((1, dim), dtype=np.float32)).shape[1]
    return 8 * BLOCK, 8 * words * BLOCK, 4 * dim * BLOCK


# writing (inside the caller's transaction)


def pack(conn, dim: int) -> int:
    """Pack chunks not in a block yet into blocks while a whole block's worth waits.
    Returns how many blocks were written."""
    written = 0
    # Counted on the index first: most writes leave less than a block waiting, and reading
    # the waiting rows (vectors and all) on every write would cost more than the write.
    while conn.execute("SELECT count(*) FROM chunks WHERE slot IS NULL").fetchone()[0] >= BLOCK:
        rows = conn.execute(
            "SELECT id, file_id, full FROM chunks WHERE slot IS NULL ORDER BY id LIMIT ?",
            (BLOCK,),
        ).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        files = np.array([r[1] for r in rows], dtype=np.int64)
        vectors = at_dim([r[2] for r in rows], dim)
        block = conn.execute(
            "INSERT INTO vec_blocks(ids, bits, vectors) VALUES (?, ?, ?)",
            (ids.tobytes(), bit_words(vectors).tobytes(), vectors.tobytes()),
        ).lastrowid
        conn.execute(
            "INSERT INTO vec_live(id, live, files) VALUES (?, ?, ?)",
            (block, BLOCK, files.tobytes()),
        )
        conn.executemany(
            "UPDATE chunks SET slot = ? WHERE id = ?",
            [(block * BLOCK + i, int(c)) for i, c in enumerate(ids)],
        )
        written += 1
    return written


def release(conn, file_id: int) -> None:
    """Mark a file's packed chunks gone (before its rows are deleted); a block left with
    fewer than MIN_LIVE live chunks is dissolved: its other chunks wait to be packed again."""
    slots = [
        r[0]
        for r in conn.execute(
            "SELECT slot FROM chunks WHERE file_id = ? AND slot IS NOT NULL", (file_id,)
        )
    ]
    by_block: dict[int, list[int]] = {}
    for slot in slots:
        by_block.setdefault(slot // BLOCK, []).append(slot % BLOCK)
    for block, offsets in by_block.items():
        live, files = conn.execute(
            "SELECT live, files FROM vec_live WHERE id = ?", (block,)
        ).fetchone()
        live -= len(offsets)
        if live < MIN_LIVE:
            dissolve(conn, block)
            continue
        files = np.frombuffer(files, dtype=np.int64).copy()
        files[offsets] = 0
        conn.execute(
            "UPDATE vec_live SET live = ?, files = ? WHERE id = ?",
            (live, files.tobytes(), block),
        )


def dissolve(conn, block: int) -> None:
    conn.execute(
        "UPDATE chunks SET slot = NULL WHERE slot BETWEEN ? AND ?",
        (block * BLOCK, block * BLOCK + BLOCK - 1),
    )
    conn.execute("DELETE FROM vec_blocks WHERE id = ?", (block,))
    conn.execute("DELETE FROM vec_live WHERE id = ?", (block,))


def rebuild(conn, dim: int) -> int:
    """Every block again at `dim` (a re-dim, or a repair). Returns the blocks written."""
    conn.execute("DELETE FROM vec_blocks")
    conn.execute("DELETE FROM vec_live")
    conn.execute("UPDATE chunks SET slot = NULL WHERE slot IS NOT NULL")
    return pack(conn, dim)


# reading


def live_slots(conn) -> set[tuple[int, int]]:
    """(chunk id, slot) of every live slot the blocks hold: `chunks` must say the same."""
    out = set()
    rows = conn.execute("SELECT b.id, b.ids, l.files FROM vec_blocks b JOIN vec_live l USING (id)")
    for block, ids, files in rows:
        ids, files = np.frombuffer(ids, dtype=np.int64), np.frombuffer(files, dtype=np.int64)
        out |= {(int(ids[o]), block * BLOCK + int(o)) for o in np.flatnonzero(files)}
    return out


@dataclass
class Part:
    """Some chunks' ids, files and one array of theirs (bit words or float vectors)."""

    ids: np.ndarray
    files: np.ndarray  # 0: the chunk is gone
    array: np.ndarray


def parts(conn, column: str, dim: int, cache: BlockCache) -> Iterator[Part]:
    """Every chunk's `column` ("bits" or "vectors"): block by block, then the unpacked ones."""
    live = dict(conn.execute("SELECT id, files FROM vec_live").fetchall())
    cache.forget_missing(set(live))
    missing = [b for b in live if cache.get(b, column) is None]
    for block in live:
        hit = cache.get(block, column)
        if hit is not None:
            yield Part(hit[0], np.frombuffer(live[block], dtype=np.int64), hit[1])
    if missing:
        rows = conn.execute(
            f"SELECT id, ids, {column} FROM vec_blocks"
            " WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(missing),),
        )
        kind = np.uint64 if column == "bits" else np.float32
        for block, ids, blob in rows:
            ids = np.frombuffer(ids, dtype=np.int64)
            array = np.frombuffer(blob, dtype=kind).reshape(BLOCK, -1)
            cache.put(block, column, ids, array)
            yield Part(ids, np.frombuffer(live[block], dtype=np.int64), array)
    state = None  # without a cache, no need to know what changed since
    if cache.budget:
        state = (conn.execute("PRAGMA data_version").fetchone()[0], cache.writes)
    kept = cache.tail.get(column) if state else None
    if kept is not None and kept[0] == state:
        if len(kept[1].ids):
            yield kept[1]
        return
    rows = conn.execute("SELECT id, file_id, full FROM chunks WHERE slot IS NULL").fetchall()
    vectors = at_dim([r[2] for r in rows], dim)
    tail = Part(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.int64),
        bit_words(vectors) if column == "bits" else vectors,
    )
    if cache.budget:
        cache.tail[column] = (state, tail)
    if rows:
        yield tail


def _grouped(items: Iterator[Part]) -> Iterator[Part]:
    """Parts joined into groups of at least GROUP_BYTES: numpy's cost per call would
    otherwise dominate the scan of small arrays (sign bits: 32 KB a block at 256 dims)."""
    pending: list[Part] = []
    size = 0
    for part in itertools.chain(items, [None]):
        if part is not None and part.array.nbytes >= GROUP_BYTES and not pending:
            yield part
            continue
        if part is not None:
            pending.append(part)
            size += part.array.nbytes
        if pending and (part is None or size >= GROUP_BYTES):
            yield (
                pending[0]
                if len(pending) == 1
                else Part(
                    *(
                        np.concatenate([getattr(p, a) for p in pending])
                        for a in ("ids", "files", "array")
                    )
                )
            )
            pending, size = [], 0


def _filter(only: Sequence[int] | None, excluded: Sequence[int]):
    """A function from a part's file ids to the mask of its slots a search may return."""
    only_ids = None if only is None else np.asarray(list(only), dtype=np.int64)
    skip = np.asarray(list(excluded), dtype=np.int64)

    def allowed(files: np.ndarray) -> np.ndarray:
        keep = files > 0
        if only_ids is not None:
            keep &= np.isin(files, only_ids)
        if len(skip):
            keep &= ~np.isin(files, skip)
        return keep

    return allowed


def _scan(conn, cache, column, dim, score, only, excluded):
    """(chunk ids, file ids, scores) of every chunk of the allowed files, `score` applied to
    each block's (or group's) array, one selection at the end."""
    allowed = _filter(only, excluded)
    ids, files, scores = [], [], []
    for part in _grouped(parts(conn, column, dim, cache)):
        keep = allowed(part.files)
        scored = score(part.array)  # all, then select: no copy of the array
        if keep.all():
            ids.append(part.ids), files.append(part.files), scores.append(scored)
        else:
            ids.append(part.ids[keep]), files.append(part.files[keep]), scores.append(scored[keep])
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(ids), np.concatenate(files), np.concatenate(scores)


def _best(
    ids: np.ndarray, files: np.ndarray, scores: np.ndarray, k: int, per_file: bool
) -> np.ndarray:
    """Positions of the k best scores (higher first; ties by lower chunk id), or with
    `per_file` of the best chunk of each of the k best files: from the top m chunks, m grown
    until they hold k files (a file outside them ranks below every file in them)."""
    n = len(scores)
    m = 8 * k if per_file else k
    while True:
        if m < n:  # the top m, and everything tied with the m-th so ties resolve by id
            kth = np.partition(scores, n - m)[n - m]
            candidates = np.flatnonzero(scores >= kth)
        else:
            candidates = np.arange(n)
        order = candidates[np.lexsort((ids[candidates], -scores[candidates]))]
        if per_file:
            _, first = np.unique(files[order], return_index=True)
            order = order[np.sort(first)]
        if len(order) >= k or m >= n:
            return order[:k]
        m *= 4


def exact(
    conn,
    cache: BlockCache,
    query: np.ndarray,
    dim: int,
    k: int,
    per_file: bool,
    only: Sequence[int] | None,
    excluded: Sequence[int],
) -> list[tuple[int, int, float]]:
    """The k best (chunk id, file id, cosine) over every chunk; `per_file`: each file's best
    chunk only. Memory: one block, and 20 bytes per chunk for the scores."""
    q = np.asarray(query, dtype=np.float32)
    ids, files, scores = _scan(conn, cache, "vectors", dim, lambda a: a @ q, only, excluded)
    top = _best(ids, files, scores, k, per_file)
    picked = zip(ids[top].tolist(), files[top].tolist(), scores[top].tolist(), strict=True)
    return list(picked)


def _xored(items: Iterator[Part], q: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """(ids, files, bit words XOR q) of the parts, joined into groups of about GROUP_BYTES
    (as `_grouped`, for numpy's cost per call): the XOR writes each part into the group's
    buffer, so joining costs no pass of its own over the bits. The buffer is reused."""
    rows = max(1, GROUP_BYTES // (8 * len(q)))
    buffer = np.empty((rows, len(q)), dtype=np.uint64)
    ids: list[np.ndarray] = []
    files: list[np.ndarray] = []
    fill = 0
    for part in itertools.chain(items, [None]):
        if part is not None and len(part.ids) > rows:  # bigger than a group: alone
            yield part.ids, part.files, part.array ^ q
            continue
        if fill and (part is None or fill + len(part.ids) > rows):
            yield np.concatenate(ids), np.concatenate(files), buffer[:fill]
            ids, files, fill = [], [], 0
        if part is not None:
            np.bitwise_xor(part.array, q, out=buffer[fill : fill + len(part.ids)])
            ids.append(part.ids), files.append(part.files)
            fill += len(part.ids)


def bit_counts(words: np.ndarray) -> np.ndarray:
    """Set bits per row (uint16). Summing the per-word counts along a row (12 words at 768
    dims) is numpy's slow case, so the counts are transposed first (a small uint8 copy) and
    summed word by word over all rows at once (docs/benchmarks.md, section 3c)."""
    counts = np.bitwise_count(words)
    return np.add.reduce(np.ascontiguousarray(counts.T), axis=0, dtype=np.uint16)


def coarse(
    conn,
    cache: BlockCache,
    query: np.ndarray,
    dim: int,
    wanted: int,
    only: Sequence[int] | None,
    excluded: Sequence[int],
) -> list[int]:
    """Chunk ids of the `wanted` nearest sign-bit vectors by Hamming distance (a popcount
    scan of the packed bits), nearest first; ties by lower chunk id.

    Each group keeps only the rows within the running bound: the `wanted`-th smallest
    distance seen so far, known from a histogram of the distances (they are small integers).
    The bound only falls, so every row of the final top (ties included) was kept when read,
    and the final selection runs on a few thousand rows, not on every chunk."""
    q = bit_words(np.asarray(query, dtype=np.float32)[None, :])[0]
    allowed = _filter(only, excluded)
    seen = np.zeros(64 * len(q) + 1, dtype=np.int64)  # how many rows at each distance
    bound = len(seen) - 1
    ids, dists = [], []
    for part_ids, files, xored in _xored(parts(conn, "bits", dim, cache), q):
        dist = bit_counts(xored)
        keep = allowed(files)
        if not keep.all():
            dist, part_ids = dist[keep], part_ids[keep]
        seen += np.bincount(dist, minlength=len(seen))
        bound = min(bound, int(np.searchsorted(np.cumsum(seen), wanted)))
        near = np.flatnonzero(dist <= bound)
        ids.append(part_ids[near]), dists.append(dist[near])
    if not ids:
        return []
    ids, dists = np.concatenate(ids), np.concatenate(dists)
    near = dists <= bound
    ids, dists = ids[near], dists[near]
    return ids[np.lexsort((ids, dists))[:wanted]].tolist()

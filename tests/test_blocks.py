"""Vector blocks (blocks.py): packing, deletion marks and dissolving, numpy scans that equal a
brute-force scan of the kept vectors, the in-memory cache, and re-dims, with blocks of 4."""

from __future__ import annotations

import numpy as np
import pytest

from jinaloc.index import blocks, health
from jinaloc.index.store import NewChunk, Store
from jinaloc.vectors import l2_normalize, pack_bits

FULL, DIM = 20, 12  # kept vectors are wider than the index's: a re-dim can go up to 20


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK", 4)
    monkeypatch.setattr(blocks, "MIN_LIVE", 2)


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "index.db")
    s.set_meta({"model": "m", "dim": DIM, "full_dim": FULL})
    yield s
    s.close()


def full(seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal(FULL))


def add(store, name: str, seeds) -> int:
    chunks = [NewChunk(i, i, [], f"text {s}", 1, f"h{s}", full(s)) for i, s in enumerate(seeds)]
    return store.write_file(f"/r/{name}", "/r", name, name, 1, 1, name, chunks)


def kept(store) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chunk ids, file ids, vectors at the index dim) of every chunk, from `chunks`."""
    rows = store.conn.execute("SELECT id, file_id, full FROM chunks ORDER BY id").fetchall()
    vectors = blocks.at_dim([r[2] for r in rows], store.dim)
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), vectors


def brute_exact(store, q, k, per_file=False, only=None, excluded=()):
    ids, files, vectors = kept(store)
    rows = [
        (int(c), int(f), float(s))
        for c, f, s in zip(ids, files, vectors @ q, strict=True)
        if (only is None or f in only) and f not in excluded
    ]
    rows.sort(key=lambda r: (-r[2], r[0]))
    if per_file:
        seen: set[int] = set()
        rows = [r for r in rows if not (r[1] in seen or seen.add(r[1]))]
    return rows[:k]


def brute_coarse(store, q, wanted, only=None):
    ids, files, vectors = kept(store)
    bits, qbits = pack_bits(vectors), pack_bits(q)
    hamming = np.unpackbits(bits ^ qbits, axis=1).sum(axis=1)
    order = sorted(
        (i for i in range(len(ids)) if only is None or files[i] in only),
        key=lambda i: (hamming[i], ids[i]),
    )
    return [int(ids[i]) for i in order[:wanted]]


def assert_scans_agree(store, seeds=range(5)):
    assert health.check(store) == []
    n = store.counts()["chunks"]
    files = [r[0] for r in store.conn.execute("SELECT id FROM files")]
    for s in seeds:
        q = l2_normalize(full(1000 + s)[: store.dim])
        for k in (1, 3, n + 5):
            got = store.exact(q, k, per_file=False)
            want = brute_exact(store, q, k)
            assert [r[:2] for r in got] == [r[:2] for r in want]
            np.testing.assert_allclose([r[2] for r in got], [r[2] for r in want], atol=1e-6)
            got = store.exact(q, k, per_file=True, exclude=files[:1])
            assert [r[:2] for r in got] == [
                r[:2] for r in brute_exact(store, q, k, True, None, files[:1])
            ]
            only = files[1::2]
            got = store.exact(q, k, per_file=True, file_ids=only)
            assert [r[:2] for r in got] == [r[:2] for r in brute_exact(store, q, k, True, only)]
            assert store.knn_bits(q, k) == brute_coarse(store, q, k)
            assert store.knn_bits(q, k, only) == brute_coarse(store, q, k, only)


def test_chunks_are_packed_a_block_at_a_time(store):
    add(store, "a.md", range(3))
    assert store.conn.execute("SELECT count(*) FROM vec_blocks").fetchone()[0] == 0
    add(store, "b.md", range(3, 10))
    # 10 chunks: two blocks of 4, two chunks waiting in `chunks`.
    assert store.conn.execute("SELECT count(*) FROM vec_blocks").fetchone()[0] == 2
    waiting = store.conn.execute("SELECT count(*) FROM chunks WHERE slot IS NULL").fetchone()[0]
    assert waiting == 2
    assert_scans_agree(store)


def test_deleted_and_replaced_chunks_leave_the_scans(store):
    a = add(store, "a.md", range(6))
    add(store, "b.md", range(6, 12))
    add(store, "c.md", range(12, 14))
    store.remove_file(a)  # the first block dissolves, the second keeps 2 live chunks
    assert store.conn.execute("SELECT live FROM vec_live ORDER BY id").fetchall() == [(2,), (4,)]
    assert_scans_agree(store)
    add(store, "b.md", range(20, 23))  # replaced: marked dead, blocks left with one live
    for live, files in store.conn.execute("SELECT live, files FROM vec_live"):
        assert live == np.count_nonzero(np.frombuffer(files, np.int64)) >= blocks.MIN_LIVE
    assert_scans_agree(store)
    assert store.counts()["chunks"] == 5


def test_bit_counts_count_every_set_bit():
    words = np.random.default_rng(0).integers(0, 2**64, (37, 12), dtype=np.uint64)
    want = np.unpackbits(words.view(np.uint8), axis=1).sum(axis=1)
    assert blocks.bit_counts(words).tolist() == want.tolist()
    assert blocks.bit_counts(words[:0]).tolist() == []


@pytest.mark.parametrize("group_bytes", [1, 48, 1 << 20])
def test_the_coarse_bound_keeps_every_tie_across_groups(store, monkeypatch, group_bytes):
    # Groups of one part, of a block and a half (parts joined, some alone), and of everything:
    # the running bound falls group by group; 12 bits give many ties at the bound, which must
    # resolve by chunk id as one selection over all would.
    monkeypatch.setattr(blocks, "GROUP_BYTES", group_bytes)
    a = add(store, "a.md", range(40))
    add(store, "b.md", range(40, 75))
    add(store, "c.md", range(75, 90))
    store.remove_file(a)
    add(store, "d.md", range(90, 101))
    n = store.counts()["chunks"]
    files = [r[0] for r in store.conn.execute("SELECT id FROM files")]
    for s in range(8):
        q = l2_normalize(full(2000 + s)[: store.dim])
        for k in (1, 2, 5, 17, n, n + 3):
            assert store.knn_bits(q, k) == brute_coarse(store, q, k)
            assert store.knn_bits(q, k, files[:1]) == brute_coarse(store, q, k, files[:1])


def test_the_cache_serves_later_scans_and_never_a_deleted_chunk(store):
    store.cache.budget = 1 << 20
    for i in range(5):
        add(store, f"{i}.md", range(4 * i, 4 * i + 4))
    q = l2_normalize(full(7)[:DIM])
    first = store.exact(q, 3, per_file=False)
    assert store.cache.entries  # the blocks read stayed in memory
    assert store.exact(q, 3, per_file=False) == first
    store.remove_file(first[0][1])
    assert first[0][0] not in [c for c, _, _ in store.exact(q, 30, per_file=False)]
    assert_scans_agree(store)


def test_a_redim_rebuilds_from_the_kept_vectors(store):
    for i in range(4):
        add(store, f"{i}.md", range(3 * i, 3 * i + 3))
    for dim in (8, FULL, 12):
        store.redim(dim)
        assert store.dim == dim and store.full_dim == FULL
        assert_scans_agree(store, seeds=range(2))
        v = store.file_vectors(store.file("/r/0.md").id)
        np.testing.assert_allclose(v[0], l2_normalize(full(0)[:dim]), atol=2e-3)


def test_a_failed_redim_changes_nothing(store, monkeypatch):
    for i in range(3):
        add(store, f"{i}.md", range(3 * i, 3 * i + 3))
    before = store.exact(l2_normalize(full(5)[:DIM]), 5, per_file=False)

    def broken(conn, dim):
        conn.execute("DELETE FROM vec_blocks")
        raise KeyboardInterrupt

    real = blocks.pack
    monkeypatch.setattr(blocks, "pack", broken)
    with pytest.raises(KeyboardInterrupt):
        store.redim(8)
    monkeypatch.setattr(blocks, "pack", real)
    assert store.dim == DIM
    assert store.exact(l2_normalize(full(5)[:DIM]), 5, per_file=False) == before
    assert_scans_agree(store, seeds=range(1))


def test_a_reader_keeps_its_snapshot_through_a_redim(store, tmp_path):
    for i in range(3):
        add(store, f"{i}.md", range(3 * i, 3 * i + 3))
    reader = Store.open(tmp_path / "index.db", readonly=True)
    reader.conn.execute("BEGIN")
    q = l2_normalize(full(9)[:DIM])
    before = reader.exact(q, 4, per_file=False)
    store.redim(8)  # WAL: the writer commits while the reader holds its snapshot
    assert reader.exact(q, 4, per_file=False) == before
    reader.conn.execute("COMMIT")
    assert reader.dim == 8
    reader.close()


def test_the_cached_unpacked_chunks_follow_every_write(store, tmp_path):
    store.cache.budget = 1 << 20
    add(store, "a.md", range(6))  # a block of 4, two chunks left unpacked
    q = l2_normalize(full(3)[:DIM])
    assert len(store.exact(q, 50, per_file=False)) == 6
    assert store.cache.tail  # kept for the next scan
    add(store, "b.md", range(6, 7))  # this connection's write
    assert len(store.exact(q, 50, per_file=False)) == 7
    other = Store.open(tmp_path / "index.db", create=False)
    add(other, "c.md", range(7, 8))  # another connection's commit
    other.close()
    assert len(store.exact(q, 50, per_file=False)) == 8
    assert_scans_agree(store)


def test_check_finds_a_block_of_the_wrong_size_and_repair_rebuilds_it(store, tmp_path):
    for i in range(3):
        add(store, f"{i}.md", range(3 * i, 3 * i + 3))
    store.conn.execute("UPDATE vec_blocks SET vectors = substr(vectors, 1, 16)")
    kinds = {p.kind for p in health.check(store)}
    assert kinds == {"blocks of the wrong size"}
    store.close()
    health.repair(tmp_path / "index.db")
    with Store.open(tmp_path / "index.db", create=False) as again:
        assert health.check(again) == []

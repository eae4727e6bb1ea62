"""How the index's defaults were picked: recall of the two-stage search against the exact
scan for each dim and oversample, its latency, and bytes per chunk on disk.

Synthetic clustered unit vectors (a cluster per 100 chunks; queries drawn like documents)
are written through jinaloc's store, 5 chunks per file, and searched with search_vector.
Recall@k compares the two-stage top k files (best chunk each, the search default) with the
exact scan's; "kept" is the share of the exact top k's summed score that the two-stage top k
has (1.0: the misses had the same scores as what replaced them). Retrieval quality per dim
needs real weights and is not measured here.

    python scripts/tune_index_defaults.py [--n 20000] [--dims 128 256 512 768]
        [--oversample 2 5 10 20 50] [--queries 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jinaloc.index import search as search_mod
from jinaloc.index.search import search_vector
from jinaloc.index.store import NewChunk, Store
from jinaloc.vectors import l2_normalize

CHUNKS_PER_FILE = 5
SPREAD = 1.2  # noise norm against the unit cluster centre


def vectors(rng, centers, n):
    dim = centers.shape[1]
    which = rng.integers(0, len(centers), n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * np.float32(SPREAD / np.sqrt(dim))
    return l2_normalize(centers[which] + noise)


def build(path: Path, data: np.ndarray) -> None:
    store = Store.open(path)
    store.set_meta({"model": "synthetic", "dim": data.shape[1]})
    for f, first in enumerate(range(0, len(data), CHUNKS_PER_FILE)):
        rows = data[first : first + CHUNKS_PER_FILE]
        chunks = [NewChunk(1, 1, [], "x", 1, f"{first + i}", v) for i, v in enumerate(rows)]
        store.write_file(f"/s/{f}.md", "/s", f"{f}.md", str(f), 0, 0, "t", chunks)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def measure(store, queries, k, oversample) -> tuple[float, float, float]:
    """Mean recall@k and score kept against the exact scan; median ms of the two stages."""
    recalls, kept, times = [], [], []
    for q in queries:
        exact = search_vector(store, q, k, exact=True)
        start = time.perf_counter()
        hits = search_vector(store, q, k, oversample=oversample)
        times.append(time.perf_counter() - start)
        recalls.append(len({h.chunk_id for h in exact} & {h.chunk_id for h in hits}) / k)
        kept.append(sum(h.score for h in hits) / sum(h.score for h in exact))
    return float(np.mean(recalls)), float(np.mean(kept)), statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="chunks")
    p.add_argument("--dims", type=int, nargs="+", default=[128, 256, 512, 768])
    p.add_argument("--oversample", type=int, nargs="+", default=[2, 5, 10, 20, 50])
    p.add_argument("--queries", type=int, default=40)
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()
    # Measure the coarse stage itself: no candidate floor, two stages at every dim.
    search_mod.MIN_CANDIDATES = 1
    search_mod.CANDIDATE_BITS = 0
    search_mod.COARSE_MIN_DIM = 1
    rng = np.random.default_rng(0)
    heads = [f"x{o}: recall / kept / ms" for o in args.oversample]
    print("| dim | B/chunk | exact ms | " + " | ".join(heads) + " |")
    print("|---" * (3 + len(heads)) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for dim in args.dims:
            centers = l2_normalize(rng.standard_normal((args.n // 100, dim)))
            data = vectors(rng, centers, args.n)
            queries = vectors(rng, centers, args.queries)
            path = Path(tmp) / f"{dim}.db"
            build(path, data)
            size = path.stat().st_size / args.n
            store = Store.open(path, create=False)
            start = time.perf_counter()
            for q in queries:
                search_vector(store, q, args.k, exact=True)
            exact_ms = (time.perf_counter() - start) / len(queries) * 1000
            cells = []
            for o in args.oversample:
                recall, kept, ms = measure(store, queries, args.k, o)
                cells.append(f"{recall:.3f} / {kept:.4f} / {ms:.1f}")
            store.close()
            row = f"| {dim} | {size:.0f} | {exact_ms:.1f} | " + " | ".join(cells) + " |"
            print(row, flush=True)
    print(f"\n{args.n} chunks, k={args.k}, {args.queries} queries", file=sys.stderr)


if __name__ == "__main__":
    main()

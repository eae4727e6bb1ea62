"""`jinaloc eval`'s own cost at scale: the numpy scan of every vector configuration over a
synthetic clustered index (written through the store, as bench_search does), its peak memory,
and its float32 ranking checked against a one-shot numpy brute force.

    python scripts/bench_eval.py [--chunks 100000] [--dim 512] [--queries 400] [--json PATH]
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import build, clustered  # noqa: E402
from benchlib import log, machine, parser, table, write_json  # noqa: E402

from jinaloc.index import eval as ev  # noqa: E402
from jinaloc.index.store import Store  # noqa: E402
from jinaloc.vectors import l2_normalize  # noqa: E402

CHUNKS_PER_FILE = 10


def brute_force_files(vectors: np.ndarray, q: np.ndarray, n: int) -> list[int]:
    """Files (1-based ids, as written) by their best chunk, all chunks scored at once."""
    best = (vectors @ q).reshape(-1, CHUNKS_PER_FILE).max(axis=1)
    return [int(f) + 1 for f in np.lexsort((np.arange(len(best)), -best))[:n]]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=400)
    args = p.parse_args()
    if args.quick:
        args.chunks, args.queries = 2_000, 20
    rng = np.random.default_rng(0)
    centers = l2_normalize(rng.standard_normal((args.chunks // 100, args.dim), dtype=np.float32))
    vectors = clustered(rng, centers, args.chunks)
    # Queries: noisy copies of random chunks.
    picks = rng.choice(args.chunks, args.queries, replace=False)
    noise = rng.standard_normal((args.queries, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    queries = l2_normalize(vectors[picks] + noise)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        log(f"building {args.chunks:,} x {args.dim}")
        built = build(db, vectors, CHUNKS_PER_FILE)
        dims = ev.eval_dims([32, 64, 128, 256, 512, 768, 1024], args.dim)
        configs = ev.vector_configs(dims, k=10)
        with Store.open(db) as store:
            tracemalloc.start()  # numpy reports its buffers to tracemalloc
            start = time.perf_counter()
            got = ev.scan(store, queries, [None] * len(queries), configs, k=10)
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        full = f"float32@{args.dim}"
        checked = min(len(queries), 50)
        same = sum(
            got[full][0][i] == brute_force_files(vectors, queries[i], 10) for i in range(checked)
        )
    rows = [
        {
            "config": c.name,
            "bytes": c.bytes_per_chunk,
            "ms_per_query": round(got[c.name][1], 3),
            "overlap@10": round(
                float(
                    np.mean(
                        [
                            ev.overlap(r, f, 10)
                            for r, f in zip(got[c.name][0], got[full][0], strict=True)
                        ]
                    )
                ),
                3,
            ),
        }
        for c in configs
    ]
    results = {
        "machine": machine(),
        "chunks": args.chunks,
        "dim": args.dim,
        "queries": len(queries),
        "build_s": round(built, 1),
        "scan_s": round(seconds, 2),
        "configs": len(configs),
        # Peak of Python and numpy allocations during the scan (the index is read in blocks).
        "scan_peak_mb": round(peak / 1e6, 1),
        "index_vectors_mb": round(vectors.nbytes / 1e6, 1),
        "float_equals_brute_force": f"{same}/{checked}",
        "rows": rows,
    }
    print(table(rows, ["config", "bytes", "ms_per_query", "overlap@10"]))
    for key in (
        "chunks",
        "dim",
        "queries",
        "scan_s",
        "configs",
        "scan_peak_mb",
        "index_vectors_mb",
    ):
        print(f"{key}: {results[key]}")
    print(f"float32@{args.dim} equals brute force: {results['float_equals_brute_force']}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()

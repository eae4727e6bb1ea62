"""Search at scale: synthetic clustered unit vectors written through jinaloc's store, then the
exact scan, the bit-only coarse stage and the two-stage search (bits, then float rescoring),
beside numpy brute force on the same vectors and faiss (flat, IVF and HNSW) as a reference
ANN library. Reports p50/p95 latency, recall@10 against numpy's exact top 10, write speed,
bytes per chunk, a sweep of the coarse stage's candidate count, and the time to re-dim.

Each layout runs in its own process per size: this tree's, and with --baseline an older
jinaloc source tree's (the same vectors and queries), so before and after are measured in
one run.

    python scripts/bench_search.py [--sizes 10000 100000 1000000] [--dims 256 512 768]
        [--baseline TREE] [--json PATH]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    call_in_tree,
    log,
    machine,
    median,
    parser,
    percentile,
    table,
    write_json,
)

from jinaloc.vectors import l2_normalize  # noqa: E402

POINTS_PER_CLUSTER = 100
# Noise norm relative to the unit cluster centre: cos(point, centre) is about 0.64.
SPREAD = 1.2
K = 10


def clustered(rng: np.random.Generator, centers: np.ndarray, n: int) -> np.ndarray:
    """n unit vectors, each its cluster centre plus isotropic noise (in slabs: 1M x 768)."""
    dim = centers.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        which = rng.integers(0, len(centers), b - a)
        noise = rng.standard_normal((b - a, dim), dtype=np.float32)
        out[a:b] = l2_normalize(centers[which] + noise * np.float32(SPREAD / np.sqrt(dim)))
    return out


def numpy_top(matrix: np.ndarray, q: np.ndarray, k: int = K) -> np.ndarray:
    scores = matrix @ q
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def recall(found, truth) -> float:
    return len(set(found) & set(truth)) / len(truth)


def stats(name: str, times: list[float]) -> dict:
    ms = [t * 1000 for t in times]
    return {f"{name}_p50_ms": median(ms), f"{name}_p95_ms": percentile(ms, 95)}


# --- one layout, in its own process ------------------------------------------------------


def worker(spec: dict) -> dict:
    """Build the index from the saved vectors through the store found on sys.path, then time
    its searches. Uses only API both layouts have (Store, NewChunk, search_vector)."""
    from jinaloc.index.search import search_vector
    from jinaloc.index.store import NewChunk, Store

    vectors = np.load(spec["vectors"], mmap_mode="r")
    queries = np.load(spec["queries"])
    truth = json.loads(Path(spec["truth"]).read_text())
    n, dim = vectors.shape
    path = Path(spec["db"])
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    store = Store.open(path)
    store.set_meta({"model": "bench", "dim": dim, "task": "retrieval"})
    per_file = spec["chunks_per_file"]
    for f, first in enumerate(range(0, n, per_file)):
        block = np.asarray(vectors[first : first + per_file])
        chunks = [NewChunk(i, i, [], f"chunk {i}", 2, f"{i:x}", v) for i, v in enumerate(block)]
        store.write_file(f"/b/{f}.md", "/b", f"{f}.md", f"{f:x}", 0, 0, f"{f}", chunks)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    write_s = time.perf_counter() - start
    store.close()
    row = {
        "write_s": write_s,
        "write_chunks_per_s": n / write_s,
        "bytes_per_chunk": path.stat().st_size / n,
    }
    store = Store.open(path, create=False, readonly=True)
    budget = spec["budget"]
    # Chunk ids are 1..n in insertion order: numpy row i is chunk i + 1.
    two, ex, bits = [], [], []
    times: dict[str, list[float]] = {"exact": [], "two_stage": [], "bits": []}
    search_vector(store, queries[0], K, all_chunks=True)  # page cache and first-call costs
    search_vector(store, queries[0], K, all_chunks=True, exact=True)
    began = time.perf_counter()
    for qi, q in enumerate(queries):
        t = time.perf_counter()
        hits = search_vector(store, q, K, all_chunks=True)
        times["two_stage"].append(time.perf_counter() - t)
        two.append(recall([h.chunk_id for h in hits], truth[qi]))
        if len(times["exact"]) < spec["exact_queries"]:  # the scan alone, as numpy's
            t = time.perf_counter()
            rows = store.exact(q, K, False)
            times["exact"].append(time.perf_counter() - t)
            ex.append(recall([r[0] for r in rows], truth[qi]))
        t = time.perf_counter()
        found = store.knn_bits(q, K)
        times["bits"].append(time.perf_counter() - t)
        bits.append(recall(found, truth[qi]))
        if qi >= 4 and time.perf_counter() - began > budget:
            break
    for name, ts in times.items():
        row |= stats(name, ts)
    row["queries"] = len(times["two_stage"])
    row["recall_two_stage"] = float(np.mean(two))
    row["recall_exact"] = float(np.mean(ex))
    row["recall_bits"] = float(np.mean(bits))
    for c in spec["sweep"]:  # the coarse stage at other candidate counts, then rescoring
        ts, rs = [], []
        began = time.perf_counter()
        for qi, q in enumerate(queries[: row["queries"]]):
            t = time.perf_counter()
            rows = store.scores(q, store.knn_bits(q, c))
            top = [r[0] for r in sorted(rows, key=lambda r: (-r[2], r[0]))[:K]]
            ts.append(time.perf_counter() - t)
            rs.append(recall(top, truth[qi]))
            if qi >= 4 and time.perf_counter() - began > budget / len(spec["sweep"]):
                break
        row |= stats(f"sweep_{c}", ts)
        row[f"recall_sweep_{c}"] = float(np.mean(rs))
    if hasattr(store, "cache"):  # this layout: a long-lived session keeps blocks in memory
        store.cache.budget = 8 << 30
        ts = []
        for q in queries[: spec["exact_queries"] + 1]:
            t = time.perf_counter()
            store.exact(q, K, False)
            ts.append(time.perf_counter() - t)
        row |= stats("exact_warm", ts[1:])  # the first call fills the cache
    store.close()
    if spec.get("redim") and hasattr(Store, "redim"):
        store = Store.open(path, create=False)
        for to in spec["redim"]:
            t = time.perf_counter()
            store.redim(to)
            row[f"redim_{to}_s"] = time.perf_counter() - t
        store.close()
    path.unlink()
    return row


# --- references in this process -----------------------------------------------------------


def references(vectors: np.ndarray, queries: np.ndarray, truth, workdir: Path, args) -> dict:
    n, dim = vectors.shape
    row: dict = {}
    ts = []
    for q in queries:
        t = time.perf_counter()
        numpy_top(vectors, q)
        ts.append(time.perf_counter() - t)
    row |= stats("numpy", ts)
    # What a one-shot numpy process pays as well: loading the vectors (page cache warm).
    npy = workdir / "cold.npy"
    np.save(npy, vectors)
    ts = []
    for q in queries[: args.exact_queries]:
        t = time.perf_counter()
        numpy_top(np.load(npy), q)
        ts.append(time.perf_counter() - t)
    row |= stats("numpy_load", ts)
    npy.unlink()
    try:
        import faiss
    except ImportError:
        log("faiss not installed: no reference ANN (pip install faiss-cpu)")
        return row
    faiss.omp_set_num_threads(args.faiss_threads)
    flat = faiss.IndexFlatIP(dim)
    flat.add(vectors)
    row |= _faiss_run("faiss_flat", flat, queries, truth)
    del flat
    nlist = int(4 * np.sqrt(n))
    t = time.perf_counter()
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(vectors[np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)])
    ivf.add(vectors)
    row["faiss_ivf_build_s"] = time.perf_counter() - t
    ivf.nprobe = args.nprobe
    row |= _faiss_run("faiss_ivf", ivf, queries, truth)
    if n <= args.hnsw_max:
        t = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 64
        hnsw.add(vectors)
        row["faiss_hnsw_build_s"] = time.perf_counter() - t
        hnsw.hnsw.efSearch = 64
        row |= _faiss_run("faiss_hnsw", hnsw, queries, truth)
    return row | {"faiss_threads": args.faiss_threads, "faiss_nprobe": args.nprobe}


def _faiss_run(name: str, index, queries: np.ndarray, truth) -> dict:
    ts, rs = [], []
    for qi, q in enumerate(queries):
        t = time.perf_counter()
        _, ids = index.search(q[None, :], K)
        ts.append(time.perf_counter() - t)
        rs.append(recall((ids[0] + 1).tolist(), truth[qi]))
    return {**stats(name, ts), f"recall_{name}": float(np.mean(rs))}


def run_size(n: int, dim: int, args, workdir: Path) -> dict:
    rng = np.random.default_rng([args.seed, n, dim])  # the same vectors whatever else runs
    centers = l2_normalize(rng.standard_normal((max(1, n // POINTS_PER_CLUSTER), dim)))
    vectors = clustered(rng, centers, n)
    queries = clustered(rng, centers, args.queries)
    truth = [(numpy_top(vectors, q) + 1).tolist() for q in queries]
    files = {k: workdir / f"{k}-{n}x{dim}.npy" for k in ("vectors", "queries")}
    np.save(files["vectors"], vectors)
    np.save(files["queries"], queries)
    (workdir / "truth.json").write_text(json.dumps(truth))
    spec = {
        "vectors": str(files["vectors"]),
        "queries": str(files["queries"]),
        "truth": str(workdir / "truth.json"),
        "chunks_per_file": args.chunks_per_file,
        "budget": args.budget,
        "exact_queries": args.exact_queries,
        "sweep": args.sweep,
        # Down to 256 (or half) and back up: the kept vectors are full-dim.
        "redim": [256 if dim > 256 else dim // 2, dim] if n == args.redim_at else [],
    }
    row = {"n": n, "dim": dim, "float_bytes_per_chunk": 4 * dim}
    del vectors  # the layouts' processes and their page cache get the memory meanwhile
    layouts = [("", Path(__file__).resolve().parent.parent)]
    if args.baseline:
        layouts.append(("base_", args.baseline))
    for prefix, tree in layouts:
        log(f"{n} x {dim}: {prefix or 'this '}layout")
        got = call_in_tree(
            tree, "bench_search", "worker", {**spec, "db": str(workdir / f"{prefix}index.db")}
        )
        row |= {prefix + key: value for key, value in got.items()}
    log(f"{n} x {dim}: numpy and faiss")
    row |= references(np.load(files["vectors"]), queries, truth, workdir, args)
    for f in files.values():
        f.unlink()
    return row


COLUMNS = [
    "n",
    "dim",
    "queries",
    "numpy_p50_ms",
    "numpy_load_p50_ms",
    "exact_p50_ms",
    "exact_warm_p50_ms",
    "base_exact_p50_ms",
    "bits_p50_ms",
    "base_bits_p50_ms",
    "two_stage_p50_ms",
    "base_two_stage_p50_ms",
    "recall_two_stage",
    "base_recall_two_stage",
    "recall_exact",
    "faiss_flat_p50_ms",
    "faiss_ivf_p50_ms",
    "recall_faiss_ivf",
    "faiss_hnsw_p50_ms",
    "recall_faiss_hnsw",
]
WRITE_COLUMNS = [
    "n",
    "dim",
    "write_chunks_per_s",
    "base_write_chunks_per_s",
    "bytes_per_chunk",
    "base_bytes_per_chunk",
    "redim_256_s",
    "faiss_ivf_build_s",
    "faiss_hnsw_build_s",
]


def targets_for(rows: list[dict]) -> list[dict]:
    """The issue's targets, where this run has the sizes they need."""
    out = []

    def add(target: str, value: float, met: bool) -> None:
        out.append({"target": target, "value": value, "met": bool(met)})

    by = {(r["n"], r["dim"]): r for r in rows}
    for (n, dim), r in sorted(by.items()):
        value = r["exact_p50_ms"] / r["numpy_p50_ms"]
        add(f"exact / numpy at {n} x {dim} <= 2", value, value <= 2)
        if "exact_warm_p50_ms" in r:
            value = r["exact_warm_p50_ms"] / r["numpy_p50_ms"]
            add(f"exact (warm session) / numpy at {n} x {dim} <= 2", value, value <= 2)
    for dim in sorted({d for _, d in by}):
        small, big = by.get((100_000, dim)), by.get((1_000_000, dim))
        if small and big:
            ratio = big["two_stage_p50_ms"] / small["two_stage_p50_ms"]
            add(f"two-stage p50 1M / 100k at dim {dim} <= 10", ratio, ratio <= 10)
            add(
                f"two-stage recall@10 at 1M x {dim} >= 0.98",
                big["recall_two_stage"],
                big["recall_two_stage"] >= 0.98,
            )
            if "base_write_chunks_per_s" in big:
                ratio = big["write_chunks_per_s"] / big["base_write_chunks_per_s"]
                add(f"write chunks/s vs before at 1M x {dim} >= 1", ratio, ratio >= 1)
    return out


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dims", type=int, nargs="+", default=[256, 512, 768])
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--budget", type=float, default=60, help="seconds of queries per layout")
    p.add_argument("--exact-queries", type=int, default=10, help="time the exact scan on these")
    p.add_argument("--sweep", type=int, nargs="*", default=[100, 256, 512, 1024, 2048])
    p.add_argument("--chunks-per-file", type=int, default=1000)
    p.add_argument("--baseline", type=Path, help="an older jinaloc source tree to compare")
    p.add_argument("--redim-at", type=int, default=100_000, help="time re-dims at this size")
    p.add_argument("--nprobe", type=int, default=16, help="faiss IVF lists probed")
    p.add_argument("--hnsw-max", type=int, default=100_000, help="faiss HNSW up to this size")
    p.add_argument("--faiss-threads", type=int, default=1)
    p.add_argument("--dir", type=Path, help="where the index files go (default: a temp dir)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.sizes, args.dims, args.queries, args.chunks_per_file = [3000], [64], 10, 500
        args.sweep, args.exact_queries, args.redim_at = [64, 256], 3, 3000
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="jinaloc-bench-search-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for dim in args.dims:
            for n in args.sizes:
                rows.append(run_size(n, dim, args, workdir))
                print(table(rows[-1:], [c for c in COLUMNS if c in rows[-1]]), flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows, [c for c in COLUMNS if c in rows[0]]))
    print(table(rows, [c for c in WRITE_COLUMNS if c in rows[0]]))
    sweep = [f"{m}_{c}" for c in args.sweep for m in ("sweep_p50", "recall")]
    print(table([sweep_view(r, args.sweep) for r in rows], ["n", "dim", *sweep]))
    targets = targets_for(rows)
    for t in targets:
        print(f"- {t['target']}: {t['value']:.3g} ({'met' if t['met'] else 'MISSED'})")
    write_json(
        args.json, {"machine": machine(), "args": vars(args), "results": rows, "targets": targets}
    )


def sweep_view(row: dict, sweep: list[int]) -> dict:
    out = {"n": row["n"], "dim": row["dim"]}
    for c in sweep:
        out[f"sweep_p50_{c}"] = row[f"sweep_{c}_p50_ms"]
        out[f"recall_{c}"] = row[f"recall_sweep_{c}"]
    return out


if __name__ == "__main__":
    main()

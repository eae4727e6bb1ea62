"""How precisely must an index keep each chunk's whole vector so that a re-dim (slice to a
Matryoshka dim, renormalize) ranks as the float32 original would? float32, float16 and int8
(one scale per vector) kept vectors are sliced to each dim and searched exactly; recall@10
is against the same search on the float32 vectors, with the bytes each layout keeps per chunk.

    python scripts/bench_kept_vectors.py [--n 100000] [--full 768 1024] [--json PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import clustered, numpy_top  # noqa: E402
from benchlib import machine, parser, table, write_json  # noqa: E402

from jinaloc.vectors import l2_normalize, matryoshka  # noqa: E402


def as_float16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def as_int8(x: np.ndarray) -> np.ndarray:
    scale = np.abs(x).max(axis=1, keepdims=True) / 127
    return np.round(x / scale).astype(np.int8).astype(np.float32) * scale


LAYOUTS = {"float32": (lambda x: x, 4), "float16": (as_float16, 2), "int8": (as_int8, 1)}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--full", type=int, nargs="+", default=[768, 1024])
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.n, args.full, args.queries = 3000, [64], 10
    rows = []
    for full in args.full:
        rng = np.random.default_rng([args.seed, args.n, full])
        centers = l2_normalize(rng.standard_normal((args.n // 100, full)))
        kept32 = clustered(rng, centers, args.n)
        queries = clustered(rng, centers, args.queries)
        dims = [d for d in (1024, 768, 512, 256, 128, 64, 32) if d <= full]
        for name, (keep, width) in LAYOUTS.items():
            kept = keep(kept32)
            row = {"full": full, "kept": name, "bytes_per_chunk": width * full + 4 * (width == 1)}
            for d in dims:
                truth_vectors = matryoshka(kept32, d)
                vectors = matryoshka(kept, d)
                q = matryoshka(queries, d)
                found = [set(numpy_top(vectors, v).tolist()) for v in q]
                truth = [set(numpy_top(truth_vectors, v).tolist()) for v in q]
                hits = [len(a & b) / 10 for a, b in zip(found, truth, strict=True)]
                row[f"recall@{d}"] = float(np.mean(hits))
                # How far a query's cosine with a chunk moves (the first 2000 chunks).
                moved = q @ (vectors[:2000] - truth_vectors[:2000]).T
                row[f"max_score_error@{d}"] = float(np.abs(moved).max())
            rows.append(row)
            print(table([row], list(row)), flush=True)
    columns = ["full", "kept", "bytes_per_chunk"]
    columns += [c for c in rows[0] if c.startswith("recall@")]
    columns += [c for c in rows[0] if c.startswith("max_score_error@")][:2]
    print(table(rows, columns))
    write_json(args.json, {"machine": machine(), "args": vars(args), "results": rows})


if __name__ == "__main__":
    main()

"""`search --rerank` end to end: the first stage (hybrid) and the cross-encoder on its best
N chunks, against a plain search of the same index, interleaved per round.

The index is generated notes embedded with the tiny nano fixture (the first stage costs
milliseconds, as with a real model it costs tens); the reranker is a full-size
random-weight Qwen3-Reranker-0.6B GGUF made by `scripts/bench_rerank.py --build`, so the
cross-encoder's cost is the real one. Chunks are ~100 tokens and cut to the reranker's
64-token window.

    python scripts/bench_search_rerank.py [--quant Q4_K_M] [--tops 10 20 40] [--rounds 2]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import bench_models_dir, fixtures_dir, log, machine, parser, table, write_json  # noqa: E402

from jinaloc.index import Index  # noqa: E402
from jinaloc.reranker import load_reranker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quant", default="Q4_K_M")
    p.add_argument("--tops", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    fixtures = fixtures_dir()
    if args.quick:
        gguf = next((Path(__file__).parent.parent / "tests/fixtures/tiny-qwen3-reranker/gguf")
                    .glob("*reranker-F32.gguf"))  # fmt: skip
        args.tops, args.rounds = [2, 4], 1
    else:
        folder = bench_models_dir() / "bench-qwen3-reranker-0.6b" / "gguf"
        gguf = next(folder.glob(f"*{args.quant}.gguf"))
    from index_helpers import make_notes

    results = {"machine": machine(), "reranker": gguf.name, "threads": args.threads, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        notes = Path(tmp) / "notes"
        make_notes(notes, 60, paragraphs=3, words=40)
        with Index.open(Path(tmp) / "i.db", create=True) as index:
            index.use_model(str(fixtures / "tiny-v5-nano"), "gguf", "F32", offline=True)
            index.update([notes], chunk_tokens=96)
            reranker = load_reranker(str(gguf), threads=args.threads)
            times: dict[str, list[float]] = {"plain": [], **{f"rerank {n}": [] for n in args.tops}}
            query = "tomato basil garlic sauce"
            index.search(query, 10)  # warm both
            reranker.score(query, ["warm up"])
            for r in range(args.rounds):
                for name in times:
                    t = time.perf_counter()
                    if name == "plain":
                        index.search(query, 10)
                    else:
                        n = int(name.split()[1])
                        index.search(query, 10, reranker=reranker, rerank_top=n)
                    times[name].append(time.perf_counter() - t)
                log(
                    f"round {r + 1}/{args.rounds}: "
                    + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
                )
            reranker.close()
    for name, ts in times.items():
        n = int(name.split()[1]) if name != "plain" else 0
        best = min(ts)
        row = {"search": name, "candidates": n, "best s": round(best, 3),
               "median s": round(sorted(ts)[len(ts) // 2], 3)}  # fmt: skip
        if n:
            row["s per candidate"] = round(best / n, 3)
        results["rows"].append(row)
    print(table(results["rows"], ["search", "candidates", "best s", "median s", "s per candidate"]))
    write_json(args.json, results)


if __name__ == "__main__":
    main()

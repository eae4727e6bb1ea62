"""Hybrid search, measured: recall of lexical, semantic and hybrid on a corpus with known
answers, a sweep of the fusion constant and weights, and the latency and size cost of the
lexical table at scale.

Quality: notes written by this script, each about a topic and holding one unique term (an
error code, a tool flag, or a two-character Chinese or Japanese word); the query asks for
that term, the note holding it is the answer. Indexed end to end by `Index` with the tiny
random-weight nano fixture (so the semantic list carries no meaning: the point is how much
fusion keeps of an exact match when the vector list disagrees, which is the worst case).

Scale: `n` chunks of generated text (words from a Zipf law) with clustered unit vectors
written through the store (so the FTS5 rows are written as `index` writes them), then per
query, interleaved, the three modes timed on the same query text and vector: p50/p95. Size:
the file with and without the lexical table.

    python scripts/bench_hybrid.py [--notes 400] [--sizes 100000] [--json PATH] [--quick]
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import fixtures_dir, log, machine, parser, percentile, table, write_json  # noqa: E402

from jinaloc.index import Index  # noqa: E402
from jinaloc.index import search as search_mod  # noqa: E402
from jinaloc.index.search import embed_query, search  # noqa: E402
from jinaloc.index.store import NewChunk, Store  # noqa: E402
from jinaloc.vectors import l2_normalize  # noqa: E402

WORDS = [
    "budget",
    "invoice",
    "tax",
    "salary",
    "savings",
    "bank",
    "account",
    "expenses",
    "receipt",
    "loan",
    "train",
    "ticket",
    "airport",
    "hotel",
    "passport",
    "luggage",
    "map",
    "museum",
    "beach",
    "city",
    "pasta",
    "sauce",
    "tomato",
    "basil",
    "garlic",
    "oven",
    "bread",
    "flour",
    "yeast",
    "dough",
    "seeds",
    "soil",
    "compost",
    "plants",
    "watering",
    "roses",
    "pruning",
    "python",
    "function",
    "tests",
    "bug",
    "commit",
    "branch",
    "compiler",
    "loop",
    "variable",
    "class",
    "meeting",
    "project",
    "deadline",
    "review",
    "design",
]
ZH = [
    "数据",
    "检索",
    "模型",
    "向量",
    "笔记",
    "文件",
    "索引",
    "搜索",
    "网络",
    "系统",
    "服务",
    "缓存",
    "日志",
    "配置",
    "接口",
    "测试",
]
JA = [
    "検索",
    "設定",
    "資料",
    "会議",
    "予定",
    "旅行",
    "料理",
    "写真",
    "音楽",
    "映画",
    "仕事",
    "勉強",
    "天気",
    "電車",
    "買物",
    "手紙",
]


def make_corpus(folder: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """`n` notes, each holding one unique term; returns (query, answer file name) pairs."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    cjk = [(w, "zh") for w in ZH] + [(w, "ja") for w in JA]
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(60))
        if i < len(cjk):
            term, lang = cjk[i]
            other = "".join(rng.choice(ZH if lang == "zh" else JA) for _ in range(3))
            body = f"# {lang} {i}\n\n今日は{other}と{term}について。{words}\n"
            query = term
        elif i % 2:
            term = f"ERR_{rng.randrange(16**6):06X}"
            body = f"# Incident {i}\n\n{words}\n\nThe service returned {term} again.\n"
            query = f"what does {term} mean"
        else:
            term = f"--{rng.choice(WORDS)}-{rng.choice(WORDS)}-{i}"
            body = f"# Tool {i}\n\n{words}\n\nRun it with {term} to skip that step.\n"
            query = f"the {term} flag"
        name = f"note-{i:04d}.md"
        (folder / name).write_text(body, encoding="utf-8")
        cases.append((query, name))
    return cases


def quality(args, work: Path) -> dict:
    fixtures = fixtures_dir()
    if fixtures is None:
        raise SystemExit("the tiny fixtures are needed for the quality part (JINALOC_FIXTURES)")
    cases = make_corpus(work / "notes", args.notes)
    with Index.open(work / "quality.db", create=True) as index:
        index.use_model(str(fixtures / "tiny-v5-nano"), "gguf", "F32", offline=True)
        index.update([work / "notes"])
        vectors = {q: embed_query(index.embedder, q, index.meta.dim) for q, _ in cases}

        def evaluate(mode: str) -> dict:
            ranks = []
            for query, answer in cases:
                hits = search(index.store, query, vectors[query], 10, mode=mode)
                names = [Path(h.path).name for h in hits]
                ranks.append(names.index(answer) + 1 if answer in names else None)
            found = [r for r in ranks if r]
            return {
                "recall@10": len(found) / len(ranks),
                "mrr@10": sum(1 / r for r in found) / len(ranks),
            }

        rows = [{"mode": m, **evaluate(m)} for m in ("lexical", "semantic", "hybrid")]
        sweep = []
        for rrf_k in (10, 30, 60, 100):
            for lexical_weight in (0.5, 1.0, 1.5, 2.0):
                search_mod.RRF_K = rrf_k
                search_mod.WEIGHTS = {"semantic": 1.0, "lexical": lexical_weight}
                sweep.append(
                    {"rrf_k": rrf_k, "lexical_weight": lexical_weight, **evaluate("hybrid")}
                )
        search_mod.RRF_K, search_mod.WEIGHTS = 60, {"semantic": 1.0, "lexical": 1.0}
    return {"notes": args.notes, "queries": len(cases), "modes": rows, "sweep": sweep}


def scale(n: int, args, work: Path) -> dict:
    rng = np.random.default_rng([args.seed, n])
    pyrng = random.Random(args.seed)
    dim = args.dim
    centers = l2_normalize(rng.standard_normal((max(1, n // 100), dim)))
    which = rng.integers(0, len(centers), n)
    noise = rng.standard_normal((n, dim), dtype=np.float32) * np.float32(1.2 / np.sqrt(dim))
    vectors = l2_normalize(centers[which] + noise)
    # Words drawn from a Zipf law over a 30k-word vocabulary (as natural text is), so a query
    # mixes common and rare words; plus one unique code per chunk.
    vocab = [f"w{i}" for i in range(30_000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    weights /= weights.sum()
    draws = iter(rng.choice(len(vocab), size=(n + args.queries) * 80, p=weights).tolist())
    path = work / f"scale-{n}.db"
    start = time.perf_counter()
    store = Store.open(path)
    store.set_meta({"model": "bench", "dim": dim, "task": "retrieval"})
    per_file = 10
    for f, first in enumerate(range(0, n, per_file)):
        chunks = []
        for i in range(first, min(first + per_file, n)):
            text = " ".join(vocab[next(draws)] for _ in range(80)) + f" ERR_{i:06d}"
            chunks.append(NewChunk(i, i, ["Part"], text, 90, f"{i:x}", vectors[i]))
        store.write_file(f"/b/{f}.md", "/b", f"{f}.md", f"{f:x}", 0, 0, f"note {f}", chunks)
    write_s = time.perf_counter() - start
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = path.stat().st_size
    bare = work / "without-lexical.db"
    store.conn.execute(f"VACUUM INTO '{bare}'")
    with Store.open(bare, create=False) as copy:
        copy.conn.execute("DROP TABLE chunks_fts")
    with Store.open(bare, create=False) as copy:
        copy.conn.execute("VACUUM")
    without = bare.stat().st_size
    bare.unlink()
    lexical_bytes = total - without
    queries = []
    for q in range(args.queries):
        words = " ".join(vocab[next(draws)] for _ in range(pyrng.randint(2, 5)))
        noise = rng.standard_normal(dim).astype(np.float32) * np.float32(1.2 / np.sqrt(dim))
        queries.append((words, l2_normalize(centers[q % len(centers)] + noise)))
    times: dict[str, list[float]] = {"semantic": [], "lexical": [], "hybrid": []}
    for q, (text, vec) in enumerate(queries):
        modes = list(times)
        for mode in modes[q % 3 :] + modes[: q % 3]:  # rotate the order per query
            t = time.perf_counter()
            search(store, text, vec, 10, mode=mode)
            times[mode].append(time.perf_counter() - t)
    store.close()
    path.unlink()
    out = {"chunks": n, "dim": dim, "write_chunks_per_s": round(n / write_s)}
    out["bytes_per_chunk"] = round(total / n)
    out["lexical_bytes_per_chunk"] = round(lexical_bytes / n)
    out["without_lexical_bytes_per_chunk"] = round(without / n)
    for mode, ts in times.items():
        ts = ts[1:]  # the first query warms caches
        out[f"{mode}_p50_ms"] = round(percentile(ts, 50) * 1000, 2)
        out[f"{mode}_p95_ms"] = round(percentile(ts, 95) * 1000, 2)
    out["hybrid_over_semantic_p50"] = round(out["hybrid_p50_ms"] / out["semantic_p50_ms"], 2)
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--notes", type=int, default=400)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.notes, args.sizes, args.queries, args.dim = 40, [2000], 10, 256
    results: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log("quality: indexing the generated notes with the tiny nano fixture")
        results["quality"] = quality(args, work)
        print(table(results["quality"]["modes"], ["mode", "recall@10", "mrr@10"]))
        print(
            table(results["quality"]["sweep"], ["rrf_k", "lexical_weight", "recall@10", "mrr@10"])
        )
        results["scale"] = []
        for n in args.sizes:
            log(f"scale: {n} chunks")
            results["scale"].append(scale(n, args, work))
        print(table(results["scale"], list(results["scale"][0])))
    write_json(args.json, results)


if __name__ == "__main__":
    main()

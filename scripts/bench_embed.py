"""Embedding throughput: jinaloc's GGUF and MLX backends against PyTorch fp32 and the matmul roof.

For each family (nano, small) every runtime is loaded once, then each workload (short ~16,
medium ~128, long ~512 tokens; one text per call, or a batch per call) is timed in rounds: a
round makes one call on every runtime, in an order rotated each round, until a time budget is
spent. Reports per runtime the median tokens/s and ms per call over rounds, the best round, the
ratio to PyTorch fp32 (median of per-round ratios: each pairs calls made seconds apart, which is
what keeps the ratio meaningful on a shared, noisy machine), the fraction of the arithmetic roof
(model FLOPs/token x tokens/s vs fp32 matmul GFLOP/s sampled every round) and the cosine of each
runtime's vectors against PyTorch fp32's.

    python scripts/make_bench_models.py           # once: full-size random-weight models
    python scripts/bench_embed.py [--families nano small] [--budget 60] [--json PATH]
    python scripts/bench_embed.py --quick         # the tiny test fixtures, seconds
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    bench_models_dir,
    fixtures_dir,
    log,
    machine,
    median,
    parser,
    table,
    timeit,
    write_json,
)

from jinaloc.embedder import load_embedder  # noqa: E402
from jinaloc.errors import JinalocError  # noqa: E402

TASK = "retrieval"
SAMPLE = """the note about a meeting with the team on budget planning and next quarter goals
includes several open questions on hiring travel costs software licenses office space and the
new customer onboarding process which should be documented before the review in march while
the research group tests retrieval models embeddings vector search and local inference"""


@dataclass
class Workload:
    name: str
    tokens: int  # target tokens per text, prompt and special tokens included
    single: int  # texts timed one per call
    batched: int  # texts in one call
    prompt: str = "document"


WORKLOADS = [
    Workload("short", 16, 4, 32, prompt="query"),
    Workload("medium", 128, 2, 8),
    Workload("long", 512, 1, 2),
]
QUICK_WORKLOADS = [
    Workload("short", 16, 2, 4, prompt="query"),
    Workload("medium", 128, 1, 2),
    Workload("long", 300, 1, 2),
]


@dataclass
class Runtime:
    name: str
    embed: object  # (texts, prompt, batch_size) -> np.ndarray (n, dim) normalized
    count: object = None  # (texts, prompt) -> token counts
    cap: int = 0  # >0: at most this many rounds per workload (slow runtimes)
    workloads: list[str] = field(default_factory=list)  # empty: all
    close: object = None


def make_texts(tokenizer, prefix: str, tokens: int, n: int, seed: int) -> list[str]:
    """n distinct texts of about `tokens` tokens each (with prefix and special tokens)."""
    rng = np.random.default_rng(seed)
    vocabulary = SAMPLE.split()
    texts = []
    for _ in range(n):
        words: list[str] = []
        while True:
            words.append(str(rng.choice(vocabulary)))
            if len(tokenizer.encode(prefix + " ".join(words)).ids) >= tokens:
                break
        texts.append(" ".join(words))
    return texts


# --- runtimes ---


def jinaloc_runtime(name: str, folder: Path, backend: str, quant: str | None, **kw) -> Runtime:
    emb = load_embedder(str(folder), backend=backend, quant=quant, offline=True)
    emb.embed(["warm up"], task=TASK)  # opens the task's model / adapter

    def embed(texts, prompt, batch_size):
        return emb.embed(texts, task=TASK, prompt=prompt, batch_size=batch_size)

    return Runtime(name, embed, count=emb.count_tokens, close=emb.close, **kw)


def torch_runtime(folder: Path, tokenizer, prompts: dict, threads: int) -> Runtime:
    import torch
    from make_bench_models import torch_model

    torch.set_num_threads(threads)
    model = torch_model(folder, TASK)

    def embed(texts, prompt, batch_size):
        out = []
        for i in range(0, len(texts), batch_size):
            ids = [
                e.ids
                for e in tokenizer.encode_batch(
                    [prompts[prompt] + t for t in texts[i : i + batch_size]]
                )
            ]
            n = max(map(len, ids))
            x = torch.zeros((len(ids), n), dtype=torch.long)
            mask = torch.zeros((len(ids), n), dtype=torch.long)
            for row, seq in enumerate(ids):
                x[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            with torch.inference_mode():
                hidden = model(input_ids=x, attention_mask=mask).last_hidden_state
            last = mask.sum(1) - 1
            out.append(hidden[torch.arange(len(ids)), last].float().numpy())
        pooled = np.concatenate(out)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return Runtime("pytorch-fp32", embed)


# --- arithmetic roof ---


class Roof:
    """fp32 matmul throughput at a model-like shape (tokens x hidden @ hidden x FFN), sampled
    between measurements so that it sees the same machine load as they do."""

    def __init__(self, quick: bool):
        m, k, n = (128, 256, 512) if quick else (512, 1024, 3072)
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((m, k), dtype=np.float32)
        self.b = rng.standard_normal((k, n), dtype=np.float32)
        self.flops = 2 * m * k * n
        self.samples: dict[str, list[float]] = {"numpy_fp32": [], "torch_fp32": []}
        try:
            import torch

            self.ta, self.tb = torch.from_numpy(self.a), torch.from_numpy(self.b)
        except ImportError:
            self.ta = None

    def sample(self, repeat: int = 3) -> None:
        t = median(timeit(lambda: self.a @ self.b, repeat=repeat))
        self.samples["numpy_fp32"].append(self.flops / t / 1e9)
        if self.ta is not None:
            t = median(timeit(lambda: self.ta @ self.tb, repeat=repeat))
            self.samples["torch_fp32"].append(self.flops / t / 1e9)

    def gflops(self) -> float:
        """The peak: the best of the numpy and PyTorch medians."""
        return max(median(v) for v in self.samples.values() if v)

    def summary(self) -> dict:
        out: dict = {"shape": [*self.a.shape, self.b.shape[1]], "peak": self.gflops()}
        for name, v in self.samples.items():
            if v:
                out[name] = {"median": median(v), "max": max(v), "samples": len(v)}
        return out


def flops_per_token(config: dict, seq: int, causal: bool) -> float:
    """Multiply-adds x 2 of the transformer body for one token in a sequence of `seq` tokens
    (the embedding lookup is free; attention is QK^T plus AV, causal attends to half on average)."""
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or h // heads
    linear = h * heads * hd * 2 + h * kv * hd * 2 + 3 * h * f
    attended = (seq + 1) / 2 if causal else seq
    return 2 * layers * (linear + 2 * heads * hd * attended)


# --- measuring ---


def interleaved(runtimes, units, prompt, batch_size, budget, min_rounds, roof) -> dict:
    """Time one call per runtime per round, rotating the order each round, until `budget`
    seconds have passed (at least `min_rounds`). units[r] is round r's list of texts.
    Returns per runtime the list of (round, seconds)."""
    samples: dict[str, list[tuple[int, float]]] = {rt.name: [] for rt in runtimes}
    start = time.perf_counter()
    r = 0
    while r < min_rounds or (time.perf_counter() - start < budget and r < len(units)):
        roof.sample(repeat=1)
        k = r % max(len(runtimes), 1)
        for rt in runtimes[k:] + runtimes[:k]:
            if rt.cap and r >= rt.cap:
                continue  # slow runtimes: `cap` rounds
            t = time.perf_counter()
            rt.embed(units[r % len(units)], prompt, batch_size)
            samples[rt.name].append((r, time.perf_counter() - t))
        r += 1
    return samples


def bench_family(family: str, folder: Path, args, roof: Roof) -> tuple[list[dict], list[dict]]:
    from tokenizers import Tokenizer

    config = json.loads((folder / "config.json").read_text())
    causal = "head_dim" in config
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    prompts = {"query": "Query: ", "document": "Document: "}
    threads = int(os.environ.get("JINALOC_THREADS") or 0) or None
    if threads is None:
        from jinaloc.backends.gguf import default_threads

        threads = default_threads()
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
    runtimes: list[Runtime] = []
    skipped: list[dict] = []

    def add(name, make):
        if args.runtimes and name not in args.runtimes:
            return
        log(f"{family}: loading {name}")
        try:
            t = time.perf_counter()
            rt = make()
            log(f"{family}: {name} loaded in {time.perf_counter() - t:.1f} s")
            runtimes.append(rt)
        except (ImportError, JinalocError, OSError) as e:
            log(f"{family}: skipping {name}: {e}")
            skipped.append({"family": family, "runtime": name, "reason": str(e)})

    add("pytorch-fp32", lambda: torch_runtime(folder, tokenizer, prompts, threads))
    gguf_quants = ("F32", "Q8_0") if args.quick else ("F16", "Q8_0", "Q4_K_M")
    for q in gguf_quants:
        add(f"gguf-{q}", lambda q=q: jinaloc_runtime(f"gguf-{q}", folder, "gguf", q))
    mlx_kw = {} if args.quick else {"cap": 1, "workloads": args.mlx_workloads}
    for q in ("fp32", "q8") if args.quick else ("fp32", "q8", "q4"):
        add(f"mlx-{q}", lambda q=q: jinaloc_runtime(f"mlx-{q}", folder, "mlx", q, **mlx_kw))

    rows: list[dict] = []
    cos_rows: list[dict] = []
    for w in workloads:
        texts = make_texts(tokenizer, prompts[w.prompt], w.tokens, max(w.single, w.batched), 7)
        n_tokens = [
            len(e.ids) for e in tokenizer.encode_batch([prompts[w.prompt] + t for t in texts])
        ]
        flop = flops_per_token(config, int(np.mean(n_tokens)), causal)
        vectors = {}
        for mode, n in (("single", w.single), ("batched", w.batched)):
            active = [
                rt for rt in runtimes if not rt.workloads or f"{w.name}-{mode}" in rt.workloads
            ]
            for rt in active:
                if not rt.cap:
                    rt.embed(texts[:1], w.prompt, 1)  # warm-up at this length
            if mode == "single":  # one text per call, a different one each round
                units = [[t] for t in texts[:n]] * args.max_rounds
                tokens = [[k] for k in n_tokens[:n]] * args.max_rounds
            else:
                units, tokens = [texts[:n]] * args.max_rounds, [n_tokens[:n]]
            samples = interleaved(
                active,
                units,
                w.prompt,
                1 if mode == "single" else 32,
                args.budget,
                args.rounds,
                roof,
            )
            log(f"{family} {w.name}-{mode}: {max(map(len, samples.values()))} rounds")
            per_round = {
                name: {r: sum(tokens[r % len(tokens)]) / dt for r, dt in got}
                for name, got in samples.items()
            }
            ref = per_round.get("pytorch-fp32", {})
            for rt in active:
                got = samples[rt.name]
                rates = per_round[rt.name]
                paired = [rate / ref[r] for r, rate in rates.items() if r in ref]
                mean_tokens = float(np.mean([sum(tokens[r % len(tokens)]) for r, _ in got]))
                rows.append(
                    {
                        "family": family,
                        "runtime": rt.name,
                        "workload": w.name,
                        "mode": mode,
                        "texts": len(units[0]),
                        "tokens_per_text": round(mean_tokens / len(units[0]), 1),
                        "rounds": len(got),
                        "tok_per_s": median(list(rates.values())),
                        "best_tok_per_s": max(rates.values()),
                        "ms_per_call": 1000 * median([dt for _, dt in got]),
                        "best_ms_per_call": 1000 * min(dt for _, dt in got),
                        "vs_pytorch": median(paired) if paired else None,
                        "gflop_per_token": flop / 1e9,
                        "gflops": median(list(rates.values())) * flop / 1e9,
                    }
                )
            if mode == "batched":
                for rt in active:
                    vectors[rt.name] = rt.embed(texts[:2], w.prompt, 32)
        ref = vectors.get("pytorch-fp32")
        for name, v in vectors.items():
            if ref is not None and name != "pytorch-fp32":
                cos = float(np.min(np.sum(v * ref, axis=1)))
                cos_rows.append(
                    {"family": family, "runtime": name, "workload": w.name, "min_cos": cos}
                )
    for rt in runtimes:
        if rt.close:
            rt.close()
    for r in rows:  # against the peak sampled over the whole family's run
        r["roof_fraction"] = r["gflops"] / roof.gflops()
    return rows + skipped, cos_rows


def targets_for(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if r.get("runtime") == "gguf-Q8_0" and r.get("vs_pytorch") is not None:
            out.append(
                {
                    "target": f"{r['family']} GGUF Q8_0 / PyTorch fp32 tok/s, {r['workload']}"
                    f" {r['mode']} >= 3",
                    "value": r["vs_pytorch"],
                    "met": r["vs_pytorch"] >= 3,
                }
            )
    return out


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, help="folder with bench-v5-nano/ and bench-v5-small/")
    p.add_argument("--families", nargs="+", default=["nano", "small"])
    p.add_argument("--rounds", type=int, default=3, help="least rounds per workload")
    p.add_argument("--max-rounds", type=int, default=30, help="most rounds per workload")
    p.add_argument("--budget", type=float, default=60, help="seconds per workload and mode")
    p.add_argument("--runtimes", nargs="*", help="only these (e.g. pytorch-fp32 gguf-Q8_0)")
    p.add_argument(
        "--mlx-workloads",
        nargs="*",
        default=["short-single", "medium-single"],
        help="MLX on Linux CPU is ~100x slower: only these workloads, one text, one round",
    )
    args = p.parse_args()
    if args.quick:
        args.rounds, args.max_rounds, args.budget = 1, 2, 0
        fixtures = fixtures_dir()
        if fixtures is None:
            raise SystemExit("--quick needs the tiny fixtures: set JINALOC_FIXTURES")
        folders = {f: fixtures / f"tiny-v5-{f}" for f in args.families}
    else:
        base = args.models or bench_models_dir()
        folders = {f: base / f"bench-v5-{f}" for f in args.families}
        missing = [str(d) for d in folders.values() if not (d / "config.json").is_file()]
        if missing:
            raise SystemExit(f"missing {missing}: run scripts/make_bench_models.py first")
    roof = Roof(args.quick)
    roof.sample()
    log(f"matmul roof now: {roof.summary()}")
    rows, cos_rows, models = [], [], {}
    for family, folder in folders.items():
        config = json.loads((folder / "config.json").read_text())
        causal = "head_dim" in config
        models[family] = {
            "folder": str(folder),
            "gflop_per_token_at_128": flops_per_token(config, 128, causal) / 1e9,
        }
        r, c = bench_family(family, folder, args, roof)
        rows += r
        cos_rows += c
    timed = [r for r in rows if "tok_per_s" in r]
    cols = ["family", "runtime", "workload", "mode", "tokens_per_text", "tok_per_s", "ms_per_call"]
    print(table(timed, cols + ["vs_pytorch", "roof_fraction"]))
    print(table(cos_rows, ["family", "runtime", "workload", "min_cos"]))
    targets = targets_for(timed)
    for t in targets:
        print(f"- {t['target']}: {t['value']:.2f} ({'met' if t['met'] else 'MISSED'})")
    write_json(
        args.json,
        {
            "machine": machine(),
            "args": vars(args),
            "roof_gflops": roof.summary(),
            "models": models,
            "results": timed,
            "skipped": [r for r in rows if "reason" in r],
            "cosine_vs_pytorch": cos_rows,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()

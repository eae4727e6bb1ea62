"""Cross-encoder cost: Qwen3-Reranker-0.6B shapes with random weights, GGUF F16/Q8_0/Q4_K_M.

Builds (once, with --build) a random-weight model at the real sizes (hidden 1024, 28 layers,
16/8 heads of 128, FFN 3072, vocab 151669, tied embeddings) in the official layout, converts
it with llama.cpp's own converter (which writes the rank head) and quantizes it, as
scripts/make_bench_models.py does for the embedders. Then times jinaloc's GGUFReranker on one
query's candidates: `--candidates` documents of 64, 256 and 512 tokens behind the shared
prompt prefix, at 1 and 2 threads, in rounds whose order rotates (medians over rounds). A
second part compares, on one quant, packing budgets and the shared prefix on/off.

The prompt's token counts are the real tokenizer's, estimated: PREFIX_TOKENS for the system
prompt + instruction + a short query (what all candidates share), SUFFIX_TOKENS after the
document. Token ids are random: cost does not depend on them.

    python scripts/bench_rerank.py --build --rounds 0   # once: 2.2 GB of GGUFs, ~2 minutes
    python scripts/bench_rerank.py [--candidates 8] [--rounds 3] [--json PATH]
    python scripts/bench_rerank.py --quick        # the tiny fixture, seconds

Needs the `bench` extra (torch, transformers) for --build only. Models go to
$JINALOC_BENCH_MODELS or ../bench-models (beside the repo), never into the repo.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_cpp  # noqa: E402
from benchlib import ROOT, bench_models_dir, log, machine, median, parser, table, write_json  # noqa: E402
from make_bench_models import (  # noqa: E402
    CONVERT,
    QUANT_FTYPES,
    converter_dir,
    quantize,
    random_weights,
)

from jinaloc.backends import rerank_gguf  # noqa: E402
from jinaloc.backends.rerank_gguf import GGUFReranker  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "tiny-qwen3-reranker"
NAME = "bench-qwen3-reranker-0.6b"
SHAPE = dict(
    hidden_size=1024,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=3072,
    vocab_size=151669,
    max_position_embeddings=40960,
    rope_theta=1000000,
    rms_norm_eps=1e-6,
)
QUANTS = ("F16", "Q8_0", "Q4_K_M")
DOC_TOKENS = (64, 256, 512)
THREADS = (1, 2)
# Qwen3 tokenizer, estimated: system prompt ~45, "<Instruct>: " + the note-search instruction
# ~22, "<Query>: " + a 6-word query ~12, "<Document>: " ~4; the suffix is 9 tokens.
PREFIX_TOKENS, SUFFIX_TOKENS = 83, 9
BUDGET_S = 2.0  # what a reranking step may cost on top of a search


def build(out: Path, src: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    folder = out / NAME
    gdir = folder / "gguf"
    if all((gdir / f"{NAME}-{q}.gguf").is_file() for q in QUANTS):
        log(f"{folder}: already built")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((FIXTURE / "config.json").read_text())
    config.update(SHAPE, max_window_layers=SHAPE["num_hidden_layers"], torch_dtype="bfloat16")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "README.md"):
        shutil.copy(FIXTURE / name, folder / name)
    log("random weights (bf16)")
    sd = random_weights(config, seed=4004, dtype=torch.bfloat16)
    sd = {f"model.{k}": v for k, v in sd.items()}  # Qwen3ForCausalLM names; lm_head is tied
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    log(f"{sum(v.numel() for v in sd.values()) / 1e6:.0f}M params")
    del sd
    gdir.mkdir(exist_ok=True)
    f16 = gdir / f"{NAME}-F16.gguf"
    log(f"converting to {f16.name}")
    subprocess.run(
        [sys.executable, "-c", CONVERT, str(src), "qwen2", str(folder)]
        + ["--outtype", "f16", "--outfile", str(f16), "--model-name", NAME],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for q in QUANTS[1:]:
        quantize(f16, gdir / f"{NAME}-{q}.gguf", QUANT_FTYPES[q])
    (folder / "model.safetensors").unlink()  # only the GGUFs are timed
    return folder


def pairs(n: int, doc_tokens: int, n_vocab: int, seed: int) -> list[list[int]]:
    """n prompts: one shared prefix, n random documents, the suffix."""
    rng = random.Random(seed)

    def ids(k):
        return [rng.randrange(n_vocab // 2, n_vocab) for _ in range(k)]

    prefix, suffix = ids(PREFIX_TOKENS), ids(SUFFIX_TOKENS)
    return [prefix + ids(doc_tokens) + suffix for _ in range(n)]


def timed(model: GGUFReranker, threads: int, seqs: list[list[int]]) -> tuple[float, float]:
    """(wall, CPU) seconds of scoring `seqs`. On a shared machine the CPU time of a 1-thread
    run is what it would take alone; wall time is what a user waits here."""
    llama_cpp.llama_set_n_threads(model.context.ctx.ctx, threads, threads)
    t, c = time.perf_counter(), time.process_time()
    model.score_tokens(seqs)
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--build", action="store_true", help="make the full-size models first")
    p.add_argument("--candidates", type=int, default=4, help="documents per timed call")
    p.add_argument("--rounds", type=int, default=2, help="0 with --build: build only")
    p.add_argument("--part", choices=["all", "cost", "variants"], default="all")
    p.add_argument("--llama-cpp-src", type=Path, help="llama.cpp tree with convert_hf_to_gguf.py")
    args = p.parse_args()
    docs, budgets = DOC_TOKENS, (1, 256, 512)
    if args.quick:
        files = {q: FIXTURE / "gguf" / f"tiny-qwen3-reranker-{q}.gguf" for q in ("F32", "Q8_0")}
        args.candidates, args.rounds = 3, 1
        docs, budgets = (16, 64, 128), (1, 256)  # the fixture's context is 512 tokens
    else:
        folder = bench_models_dir() / NAME
        if args.build:
            folder = build(bench_models_dir(), converter_dir(args.llama_cpp_src))
        if args.rounds == 0:
            return  # --build --rounds 0: build only
        files = {q: folder / "gguf" / f"{NAME}-{q}.gguf" for q in QUANTS}
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            raise SystemExit(f"missing {missing[0]}: run with --build first")
    models = {q: GGUFReranker(f, threads=max(THREADS)) for q, f in files.items()}
    mode = {q: m.mode for q, m in models.items()}
    log(f"loaded {', '.join(f'{q} ({m})' for q, m in mode.items())}")
    n_vocab = min(m.n_vocab for m in models.values())
    work = {d: pairs(args.candidates, d, n_vocab, seed=d) for d in docs}
    # Part 2 on one quant, 1 thread: packing budgets, the shared prefix, and the two logits
    # instead of the rank head (the same file; pooled rank output makes llama.cpp compute the
    # tied lm_head for every token, logits only for each pair's last).
    probe_q = "Q8_0"
    pack = rerank_gguf.PACK_TOKENS
    variants = [("pack", b) for b in budgets] + [("no-shared-prefix", pack), ("logits", pack)]
    cases = (
        [(q, t, d) for q in models for t in THREADS for d in docs]
        if args.part != "variants"
        else []
    )
    times: dict = {c: [] for c in cases}
    vtimes: dict = {(v, d): [] for v in variants for d in docs[:2]} if args.part != "cost" else {}
    if vtimes:
        models["logits"] = GGUFReranker(files[probe_q], threads=1, mode="logits")
    for m in models.values():  # one context for every run, so none is timed growing it
        m.context.ensure(PREFIX_TOKENS + max(budgets + docs) + SUFFIX_TOKENS, 1 << 20)
        timed(m, 1, work[docs[0]][:2])  # warm-up
    start = time.perf_counter()
    for r in range(args.rounds):
        k = r % len(cases)
        for c in cases[k:] + cases[:k]:
            q, t, d = c
            times[c].append(timed(models[q], t, work[d]))
            log(f"  {q} {t} threads {d} tokens: (wall, cpu) {times[c][-1]}")
        for (kind, budget), d in vtimes:
            m = models["logits" if kind == "logits" else probe_q]
            shared = rerank_gguf.MIN_SHARED
            m.pack_tokens = budget
            if kind == "no-shared-prefix":
                rerank_gguf.MIN_SHARED = math.inf
            try:
                vtimes[(kind, budget), d].append(timed(m, 1, work[d]))
                log(f"  {probe_q} {kind} {budget} {d}: (wall, cpu) {vtimes[(kind, budget), d][-1]}")
            finally:
                rerank_gguf.MIN_SHARED = shared
                m.pack_tokens = rerank_gguf.PACK_TOKENS
        log(f"round {r + 1}/{args.rounds} done, {time.perf_counter() - start:.0f} s")
    rows = []
    for (q, t, d), ts in times.items():
        wall = median([w for w, _ in ts]) / args.candidates
        cpu = median([c for _, c in ts]) / args.candidates
        rows.append(
            {
                "quant": q,
                "threads": t,
                "doc_tokens": d,
                "ms_per_candidate": 1000 * wall,
                "cpu_ms_per_candidate": 1000 * cpu,
                "fit_in_2s": int(BUDGET_S // wall),
                "fit_in_2s_alone": int(BUDGET_S // (cpu / t)),
                "rounds": len(ts),
            }
        )
    vrows = [
        {
            "variant": f"{kind} {budget}" if kind == "pack" else kind,
            "doc_tokens": d,
            "ms_per_candidate": 1000 * median([w for w, _ in ts]) / args.candidates,
            "cpu_ms_per_candidate": 1000 * median([c for _, c in ts]) / args.candidates,
            "rounds": len(ts),
        }
        for ((kind, budget), d), ts in vtimes.items()
    ]
    columns = ["ms_per_candidate", "cpu_ms_per_candidate"]
    print(table(rows, ["quant", "threads", "doc_tokens", *columns, "fit_in_2s", "fit_in_2s_alone"]))
    print()
    print(f"{probe_q}, 1 thread:")
    print(table(vrows, ["variant", "doc_tokens", *columns, "rounds"]))
    write_json(
        args.json,
        {
            "machine": machine(),
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "prefix_tokens": PREFIX_TOKENS,
            "suffix_tokens": SUFFIX_TOKENS,
            "pack_tokens": rerank_gguf.PACK_TOKENS,
            "modes": mode,
            "results": rows,
            "variants": vrows,
        },
    )
    for m in models.values():
        m.close()


if __name__ == "__main__":
    main()

"""Embedding throughput: jinaloc's GGUF, ONNX and MLX backends against PyTorch and the matmul roof.

For each family (nano, small) every runtime is loaded once, then each workload (short ~16,
medium ~128, long ~512 tokens; one text per call, or a batch per call) is timed in rounds: a
round makes one call on every runtime, in an order rotated each round, until a time budget is
spent. Reports per runtime the median tokens/s and ms per call over rounds, the best round, the
ratio to PyTorch fp32 (median of per-round ratios: each pairs calls made seconds apart, which is
what keeps the ratio meaningful on a shared, noisy machine), the fraction of the arithmetic roof
(model FLOPs/token x tokens/s vs fp32 matmul GFLOP/s sampled every round; int8_roof_fraction:
vs ORT's int8 GEMM, MatMulInteger u8 x s8 at the same shape, one thread) and the cosine of each
runtime's vectors against PyTorch fp32's.

    python scripts/make_bench_models.py           # once: full-size random-weight models
    python scripts/bench_embed.py [--families nano small] [--budget 60] [--json PATH]
    python scripts/bench_embed.py --quick         # the tiny test fixtures, seconds
    python scripts/bench_embed.py --shapes 1x16 32x128 4x512 --threads 1 2 --rss  # issue 13

    python scripts/bench_embed.py --invariance [--families nano small]   # issue 24

`--invariance` compares ONNX int8 before (onnxruntime's quantize_dynamic: one activation scale
per batch) and after (per-row activation scales in the graph), with fp32 as the reference:
each text alone vs batched with short, long and many neighbours (cosine, bit-identical), the
cosine to fp32, and tokens/s at 1x16, 32x128 and 4x512 in interleaved rounds.

Peers (`--shapes` runs only): fastembed and embroider, each on an int8 graph jinaloc writes
from the same weights (graph.build(hidden_states=True): qint8, per-row activations, output
`last_hidden_state` for every token, since both pool themselves; so their final layer runs on
every token where jinaloc's runs on the pooled one). Bench-only packages, in no extra:
`pip install --no-deps fastembed==0.9.1 embroider==0.3.3 loguru mmh3 py_rust_stemmers`
(--no-deps: fastembed would pin huggingface_hub below the one transformers here needs).
embroider has no thread setting (it takes half the physical cores: one here) and encodes one
text per forward pass by design.

`--shapes NxT` replaces the workloads by batches of N texts of about T tokens in one call;
`--threads` runs GGUF (and ONNX int8) at each count; `--rss` measures each runtime's peak RSS
in a child process of its own (load + one call of each shape), since all runtimes share the
timing process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
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

from jinaloc.errors import JinalocError  # noqa: E402
from jinaloc.load import load_embedder  # noqa: E402

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
    load_s: float = 0.0  # first load (for ONNX: includes building the model once)
    rss_added_mb: float = 0.0
    peak_rss_mb: float | None = None


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


@contextmanager
def thread_env(threads: int | None):
    """JINALOC_THREADS for the backends created inside (they read it when created)."""
    old = os.environ.get("JINALOC_THREADS")
    if threads:
        os.environ["JINALOC_THREADS"] = str(threads)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("JINALOC_THREADS", None)
        else:
            os.environ["JINALOC_THREADS"] = old


def jinaloc_runtime(
    name: str, folder: Path, backend: str, quant: str | None, threads: int | None = None, **kw
) -> Runtime:
    with thread_env(threads):
        emb = load_embedder(str(folder), backend=backend, quant=quant, offline=True)
        emb.embed(["warm up"], task=TASK)  # opens the task's model / adapter (ONNX: builds it)

    def embed(texts, prompt, batch_size):
        return emb.embed(texts, task=TASK, prompt=prompt, batch_size=batch_size)

    return Runtime(name, embed, count=emb.count_tokens, close=emb.close, **kw)


def torch_runtime(folder: Path, tokenizer, prompts: dict, threads: int, dtype="fp32") -> Runtime:
    import torch
    from make_bench_models import torch_model

    torch.set_num_threads(threads)
    model = torch_model(folder, TASK)
    if dtype == "bf16":
        model = model.to(torch.bfloat16)

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

    return Runtime(f"pytorch-{dtype}", embed)


def peer_graph(folder: Path) -> Path:
    """jinaloc's qint8 graph of `folder` with a `last_hidden_state` output, in a folder of its
    own with the tokenizer files: what the peers load. Built once, in jinaloc's ONNX cache."""
    import shutil

    from jinaloc.backends import onnx as onnx_backend
    from jinaloc.backends.canonical import adapter_dir, merge_adapter, read_weights
    from jinaloc.registry import detect_architecture

    config = json.loads((folder / "config.json").read_text())

    def make(out: Path) -> None:
        from jinaloc.backends.onnx import graph

        weights = merge_adapter(read_weights(folder), adapter_dir(folder, TASK))
        arch = detect_architecture(config)
        graph.build(config, arch, weights, out / "model.onnx", "qint8", hidden_states=True)
        del weights
        onnx_backend._save_optimized(out / "model.onnx")
        for f in folder.iterdir():
            if f.is_file() and f.suffix in (".json", ".txt"):
                shutil.copy(f, out / f.name)
        # fastembed truncates at model_max_length and refuses a tokenizer without one
        tok = out / "tokenizer_config.json"
        settings = json.loads(tok.read_text()) if tok.is_file() else {}
        if not 0 < float(settings.get("model_max_length") or 0) < 1e9:
            settings["model_max_length"] = config["max_position_embeddings"]
            tok.write_text(json.dumps(settings))

    final = onnx_backend.cache_path(folder, TASK, "qint8-hidden-states-2")
    return onnx_backend.build_once(final, make, f"{folder.name} peer graph").parent


def fastembed_runtime(folder: Path, threads: int) -> Runtime:
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    graph = peer_graph(folder)
    name = f"jinaloc-bench/{folder.name}-{graph.name[-8:]}"
    if name not in {m["model"] for m in TextEmbedding.list_supported_models()}:
        TextEmbedding.add_custom_model(
            model=name,
            pooling=PoolingType.LAST_TOKEN,
            normalization=True,
            sources=ModelSource(hf=name),
            dim=json.loads((folder / "config.json").read_text())["hidden_size"],
            model_file="model.onnx",
            additional_files=["model.onnx.data"],
        )
    model = TextEmbedding(name, specific_model_path=str(graph), threads=threads)
    prefix = {"query": "Query: ", "document": "Document: "}

    def embed(texts, prompt, batch_size):
        docs = [prefix[prompt] + t for t in texts]
        return np.stack(list(model.embed(docs, batch_size=batch_size)))

    return Runtime("fastembed", embed)


def embroider_runtime(folder: Path) -> Runtime:
    import onnxruntime

    # embroider dlopens ONNX Runtime: the same library as the other runtimes here
    capi = Path(onnxruntime.__file__).parent / "capi"
    dylib = next(capi.glob("libonnxruntime.so*"), None)
    if dylib is not None:
        os.environ.setdefault("ORT_DYLIB_PATH", str(dylib))
    import embroider

    graph = peer_graph(folder)
    dim = json.loads((folder / "config.json").read_text())["hidden_size"]
    model = embroider.JinaV5.open_files(
        str(graph / "model.onnx"), str(graph / "tokenizer.json"), truncate_dim=dim, device="cpu"
    )
    task = {"query": "Query", "document": "Document"}

    def embed(texts, prompt, batch_size):
        return np.asarray(model.encode_batch(list(texts), task=task[prompt]), np.float32)

    return Runtime("embroider", embed)


# --- arithmetic roof ---


class Int8Roof:
    """ORT's int8 GEMM at a model-like shape (tokens x hidden @ hidden x FFN), u8 activations x
    s8 weights within +-63 as the qint8 graphs store them, one thread."""

    def __init__(self, m: int = 512, k: int = 1024, n: int = 3072):
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        w = rng.integers(-63, 64, (k, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "w"], ["y"])
        graph = helper.make_graph(
            [node],
            "roof",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
            [numpy_helper.from_array(w, "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            model.SerializeToString(),
            options,
            providers=["CPUExecutionProvider"],
        )
        self.feed = {"a": rng.integers(0, 256, (m, k), dtype=np.uint8)}
        self.ops = 2 * m * k * n
        self.samples: list[float] = []

    def sample(self, repeat: int = 3) -> None:
        """`repeat` timed calls, each a sample (not the best of them: the runtimes' calls are
        single calls too, on the same loaded machine)."""
        for _ in range(repeat):
            t = time.perf_counter()
            self.session.run(None, self.feed)
            self.samples.append(self.ops / (time.perf_counter() - t) / 1e9)

    def gops(self) -> float:
        return median(self.samples)


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
        self.int8 = Int8Roof(m, k, n)
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
        self.int8.sample(repeat)

    def gflops(self) -> float:
        """The peak: the best of the numpy and PyTorch medians."""
        return max(median(v) for v in self.samples.values() if v)

    def summary(self) -> dict:
        out: dict = {"shape": [*self.a.shape, self.b.shape[1]], "peak": self.gflops()}
        for name, v in self.samples.items():
            if v:
                out[name] = {"median": median(v), "max": max(v), "samples": len(v)}
        v = self.int8.samples
        out["ort_int8_gops"] = {"median": median(v), "max": max(v), "samples": len(v)}
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


def default_thread_count() -> int:
    from jinaloc.backends.threads import default_threads

    return default_threads()


def has_bf16() -> bool:
    """PyTorch bf16 is a reference only where the CPU computes bf16 natively."""
    return bool({"avx512_bf16", "amx_bf16"} & set(machine().get("simd", [])))


def factories(folder: Path, tokenizer, prompts: dict, threads: int, args) -> dict:
    """Runtime name -> a function that loads it (nothing is loaded here)."""
    out = {"pytorch-fp32": lambda: torch_runtime(folder, tokenizer, prompts, threads)}
    if not args.quick and has_bf16():
        out["pytorch-bf16"] = lambda: torch_runtime(folder, tokenizer, prompts, threads, "bf16")
    counts = args.threads or [None]  # None: the backends' own default

    def tag(name, t):
        return name if t is None or len(counts) == 1 else f"{name}-t{t}"

    for q in ("fp32", "qint8", "quint8"):
        # fp32 and QUInt8 at the default count only: they set the reference and the
        # alternative; QInt8 is the candidate default, so it runs at every count.
        for t in counts if q == "qint8" else counts[-1:]:
            name = tag(f"onnx-{q}", t)
            out[name] = lambda q=q, t=t, name=name: jinaloc_runtime(name, folder, "onnx", q, t)
    gguf_quants = ("F32", "Q8_0") if args.quick else ("F16", "Q8_0", "Q4_K_M")
    for q in gguf_quants:
        for t in counts:
            name = tag(f"gguf-{q}", t)
            out[name] = lambda q=q, t=t, name=name: jinaloc_runtime(name, folder, "gguf", q, t)
    if args.shapes:  # MLX (Linux: tests only) keeps to its own short workloads
        out["fastembed"] = lambda: fastembed_runtime(folder, threads)
        out["embroider"] = lambda: embroider_runtime(folder)
        return out
    mlx_kw = {} if args.quick else {"cap": 1, "workloads": args.mlx_workloads}
    for q in ("fp32", "q8") if args.quick else ("fp32", "q8", "q4"):
        out[f"mlx-{q}"] = lambda q=q: jinaloc_runtime(f"mlx-{q}", folder, "mlx", q, **mlx_kw)
    return out


def workloads_for(args) -> list[Workload]:
    if args.shapes:
        out = []
        for shape in args.shapes:
            n, _, t = shape.partition("x")
            tokens = int(t)
            out.append(Workload(shape, tokens, 0, int(n), "query" if tokens <= 32 else "document"))
        return out
    return QUICK_WORKLOADS if args.quick else WORKLOADS


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def probe_rss(family: str, folder: Path, name: str, args) -> float | None:
    """Peak RSS (MB) of one runtime alone: a child process loads it and embeds each shape
    once (`--probe`), then reports its ru_maxrss."""
    cmd = [sys.executable, __file__, "--probe", name, "--probe-folder", str(folder)]
    cmd += ["--shapes", *(args.shapes or [])] if args.shapes else []
    cmd += ["--quick"] if args.quick else []
    if args.threads:
        cmd += ["--threads", *map(str, args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        log(f"{family}: rss probe of {name} failed: {done.stderr.strip()[-300:]}")
        return None
    return float(done.stdout.strip().splitlines()[-1])


def probe(args) -> None:
    """The child side of probe_rss: prints this process's peak RSS in MB (Linux)."""
    from tokenizers import Tokenizer

    folder = args.probe_folder
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    prompts = {"query": "Query: ", "document": "Document: "}
    threads = int(os.environ.get("JINALOC_THREADS") or 0) or default_thread_count()
    rt = factories(folder, tokenizer, prompts, threads, args)[args.probe]()
    for w in workloads_for(args):
        texts = make_texts(tokenizer, prompts[w.prompt], w.tokens, max(w.batched, 1), 7)
        rt.embed(texts, w.prompt, 32)
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report the
    # (larger) parent's peak at fork time.
    with open("/proc/self/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM:"))
    print(int(hwm.split()[1]) / 1024)


def bench_family(family: str, folder: Path, args, roof: Roof) -> tuple[list[dict], list[dict]]:
    from tokenizers import Tokenizer

    config = json.loads((folder / "config.json").read_text())
    causal = "head_dim" in config
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    prompts = {"query": "Query: ", "document": "Document: "}
    threads = int(os.environ.get("JINALOC_THREADS") or 0) or default_thread_count()
    workloads = workloads_for(args)
    runtimes: list[Runtime] = []
    skipped: list[dict] = []

    def add(name, make):
        if args.runtimes and name not in args.runtimes:
            return
        log(f"{family}: loading {name}")
        try:
            t = time.perf_counter()
            rss = current_rss_mb()
            rt = make()
            rt.load_s = time.perf_counter() - t
            rt.rss_added_mb = current_rss_mb() - rss
            log(f"{family}: {name} loaded in {rt.load_s:.1f} s")
            runtimes.append(rt)
        except (ImportError, JinalocError, OSError) as e:
            log(f"{family}: skipping {name}: {e}")
            skipped.append({"family": family, "runtime": name, "reason": str(e)})

    for name, make in factories(folder, tokenizer, prompts, threads, args).items():
        add(name, make)

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
            if n == 0:
                continue
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
            engine = next((n for n in per_round if n.startswith("onnx-qint8")), None)
            own = per_round.get(engine, {})  # jinaloc's default engine, for the peers
            for rt in active:
                got = samples[rt.name]
                rates = per_round[rt.name]
                paired = [rate / ref[r] for r, rate in rates.items() if r in ref]
                vs_own = [rate / own[r] for r, rate in rates.items() if r in own]
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
                        "vs_onnx_qint8": median(vs_own) if vs_own else None,
                        "gflop_per_token": flop / 1e9,
                        "gflops": median(list(rates.values())) * flop / 1e9,
                        "load_s": rt.load_s,
                        "rss_added_mb": rt.rss_added_mb,
                    }
                )
            if mode == "batched":
                for rt in active:
                    vectors[rt.name] = rt.embed(texts[:2], w.prompt, 32)
        # against PyTorch fp32, or without torch against jinaloc's engine (the peers' check)
        ref_name = "pytorch-fp32" if "pytorch-fp32" in vectors else engine
        ref = vectors.get(ref_name)
        for name, v in vectors.items():
            if ref is not None and name != ref_name:
                cos = float(np.min(np.sum(v * ref, axis=1)))
                cos_rows.append(
                    {
                        "family": family,
                        "runtime": name,
                        "workload": w.name,
                        "reference": ref_name,
                        "min_cos": cos,
                    }
                )
    for rt in runtimes:
        if rt.close:
            rt.close()
    if args.rss:
        peaks = {rt.name: probe_rss(family, folder, rt.name, args) for rt in runtimes}
        for r in rows:
            r["peak_rss_mb"] = peaks.get(r["runtime"])
    for r in rows:  # against the peaks sampled over the whole family's run
        r["roof_fraction"] = r["gflops"] / roof.gflops()
        r["int8_roof_fraction"] = r["gflops"] / roof.int8.gops()
    return rows + skipped, cos_rows


def targets_for(rows: list[dict], cos_rows: list[dict]) -> list[dict]:
    """Issue 13's: a CPU backend >= 2x PyTorch fp32 tok/s on 32 x 128 and 4 x 512 at cosine
    >= 0.995 to fp32, and one short nano query under 30 ms."""
    cos = {(c["family"], c["runtime"], c["workload"]): c["min_cos"] for c in cos_rows}
    out = []
    for r in rows:
        if not r["runtime"].startswith(("onnx-qint8", "gguf-Q8_0")) or r["vs_pytorch"] is None:
            continue
        c = cos.get((r["family"], r["runtime"], r["workload"]))
        if r["workload"] in ("32x128", "4x512"):
            out.append(
                {
                    "target": f"{r['family']} {r['runtime']} / PyTorch fp32 tok/s,"
                    f" {r['workload']} >= 2 at cos >= 0.995",
                    "value": r["vs_pytorch"],
                    "cos": c,
                    "met": r["vs_pytorch"] >= 2 and c is not None and c >= 0.995,
                }
            )
        elif r["workload"] == "1x16" and r["family"] == "nano":
            out.append(
                {
                    "target": f"nano {r['runtime']} one short query (1 x 16) < 30 ms",
                    "value": r["ms_per_call"],
                    "met": r["ms_per_call"] < 30,
                }
            )
        elif not r["workload"][0].isdigit() and r["runtime"] == "gguf-Q8_0":
            out.append(
                {
                    "target": f"{r['family']} GGUF Q8_0 / PyTorch fp32 tok/s, {r['workload']}"
                    f" {r['mode']} >= 3",
                    "value": r["vs_pytorch"],
                    "met": r["vs_pytorch"] >= 3,
                }
            )
    return out


# --- batch invariance (issue 24) ---


def dynamic_int8_runtime(folder: Path, threads: int | None) -> Runtime:
    """The int8 model as jinaloc built it before issue 24: the fp32 graph through
    onnxruntime's quantize_dynamic (per-channel int8 weights, one activation scale per
    MatMul over the whole batch), run by the same backend code."""
    import tempfile

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with thread_env(threads):
        emb = load_embedder(str(folder), backend="onnx", quant="fp32", offline=True)
        emb.embed(["warm up"], task=TASK)
    out = Path(tempfile.mkdtemp(prefix="dyn-int8-")) / "model.onnx"
    quantize_dynamic(
        emb.backend.model_file,
        out,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gather"],
        use_external_data_format=True,
        per_channel=True,
        extra_options={"MatMulConstBOnly": True},
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = emb.backend.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    emb.backend.session = ort.InferenceSession(
        str(out), options, providers=["CPUExecutionProvider"]
    )

    def embed(texts, prompt, batch_size):
        return emb.embed(texts, task=TASK, prompt=prompt, batch_size=batch_size)

    return Runtime("onnx-int8-dynamic (before)", embed, count=emb.count_tokens, close=emb.close)


def invariance_family(family: str, folder: Path, args) -> tuple[list[dict], list[dict]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    threads = (args.threads or [None])[-1]
    runtimes = [jinaloc_runtime("onnx-fp32", folder, "onnx", "fp32", threads)]
    runtimes.append(dynamic_int8_runtime(folder, threads))
    for q in ("qint8", "quint8"):
        runtimes.append(jinaloc_runtime(f"onnx-{q} (after)", folder, "onnx", q, threads))
    fp32 = runtimes[0]
    targets = make_texts(tokenizer, "Document: ", 24, 3, 1) + make_texts(
        tokenizer, "Document: ", 200, 2, 2
    )
    short = make_texts(tokenizer, "Document: ", 8, 4, 3)
    long = make_texts(tokenizer, "Document: ", 512, 2, 4)
    many = make_texts(tokenizer, "Document: ", 128, 31, 5)
    batches = {"short neighbours": short, "long neighbours": long, "31 neighbours": many}
    inv_rows = []
    ref = fp32.embed(targets, "document", 1)
    for rt in [] if args.speed_only else runtimes:
        alone = rt.embed(targets, "document", 1)  # one text per call: nothing else in its batch
        row = {"family": family, "runtime": rt.name}
        row["cos_to_fp32"] = float((alone * ref).sum(1).min())
        worst, identical = 1.0, True
        for name, neighbours in batches.items():
            for i, text in enumerate(targets):
                got = rt.embed([text, *neighbours], "document", 64)[0]
                worst = min(worst, float(alone[i] @ got))
                identical &= bool(np.array_equal(alone[i], got))
                row[f"min_cos {name}"] = min(row.get(f"min_cos {name}", 1.0), float(alone[i] @ got))
        row["min_cos_alone_vs_batched"] = worst
        row["bit_identical"] = identical
        inv_rows.append(row)
        log(f"{family} {rt.name}: {row}")
    speed_rows = []
    for shape in args.shapes or ("1x16", "32x128", "4x512"):
        n, _, t = shape.partition("x")
        prompt = "query" if int(t) <= 32 else "document"
        units = [
            make_texts(
                tokenizer, "Query: " if prompt == "query" else "Document: ", int(t), int(n), s
            )
            for s in range(args.max_rounds)
        ]
        tokens = [sum(runtimes[0].count(u, prompt)) for u in units]
        samples = interleaved(runtimes, units, prompt, int(n), args.budget, args.rounds, Roof(True))
        base = {r: s for r, s in samples["onnx-int8-dynamic (before)"]}
        for rt in runtimes:
            rates = [tokens[r % len(units)] / s for r, s in samples[rt.name]]
            ratios = [base[r] / s for r, s in samples[rt.name] if r in base]
            speed_rows.append(
                {
                    "family": family,
                    "runtime": rt.name,
                    "shape": shape,
                    "rounds": len(rates),
                    "tok_per_s": median(rates),
                    "vs_before": median(ratios),
                }
            )
        log(f"{family} {shape}: done")
    for rt in runtimes:
        if rt.close:
            rt.close()
    return inv_rows, speed_rows


def invariance(args, folders: dict) -> None:
    inv, speed = [], []
    load = os.getloadavg()
    for family, folder in folders.items():
        a, b = invariance_family(family, folder, args)
        inv += a
        speed += b
    print(
        table(
            inv, ["family", "runtime", "cos_to_fp32", "min_cos_alone_vs_batched", "bit_identical"]
        )
    )
    print(table(speed, ["family", "runtime", "shape", "rounds", "tok_per_s", "vs_before"]))
    print(f"load average before/after: {load} / {os.getloadavg()}")
    write_json(
        args.json,
        {
            "machine": machine(),
            "args": vars(args),
            "load_before_after": [load, os.getloadavg()],
            "invariance": inv,
            "speed": speed,
        },
    )


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
    p.add_argument("--shapes", nargs="*", help="NxT: N texts of ~T tokens per call (e.g. 32x128)")
    p.add_argument("--threads", nargs="*", type=int, help="thread counts for GGUF and ONNX int8")
    p.add_argument("--rss", action="store_true", help="peak RSS per runtime, in child processes")
    p.add_argument("--invariance", action="store_true", help="ONNX int8 batch invariance")
    p.add_argument("--speed-only", action="store_true", help="--invariance: tokens/s only")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    p.add_argument("--probe-folder", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        return probe(args)
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
    if args.invariance:
        return invariance(args, folders)
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
    extra = ["peak_rss_mb"] if args.rss else []
    cols += ["vs_pytorch", "vs_onnx_qint8", "roof_fraction", "int8_roof_fraction", *extra]
    print(table(timed, cols))
    print(table(cos_rows, ["family", "runtime", "workload", "reference", "min_cos"]))
    targets = targets_for(timed, cos_rows)
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

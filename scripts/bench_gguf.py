"""GGUF on x86: where the time goes (issue 25), measured on full-size random-weight GGUFs.

    python scripts/bench_gguf.py make [--reranker]     # nano/small (+ reranker) F16, Q8_0, once
    python scripts/bench_gguf.py profile ...           # time per part of llama.cpp's graph
    python scripts/bench_gguf.py run --before TREE ... # the code before vs now, interleaved

`make` writes the GGUFs directly with llama.cpp's gguf-py (from the llama-cpp-python sdist,
as make_bench_models.py fetches it) and quantizes them with llama.cpp itself: the fixture's
metadata and tokenizer (vocab padded to the real size, as make_bench_models.py does), the real
shapes, random weights. No torch needed; the cost per token is the real model's.

`profile` (one thread, the jinaloc on sys.path: PYTHONPATH=<tree> for another) adds each graph
node's time to a part (projections, output head, attention, the rest) and compares the
projections' rate with the int8 GEMM roof (ONNX Runtime MatMulInteger 512x1024x3072, as issue
25 measured it) sampled before and after. `run` keeps each variant (a source tree, a thread
count; `--flash`: flash attention for short inputs too) in its own process and times them in
rotated order per round: wall and CPU time, the share inside llama_decode, peak RSS, and the
cosine between the variants' vectors (docs/benchmarks.md 1g).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = Path(os.environ.get("JINALOC_BENCH_GGUF") or HERE.parents[1] / "bench-models-gguf")
ARCH = {"nano": "eurobert", "small": "qwen3", "reranker": "qwen3"}
FTYPES = {"F16": 1, "Q8_0": 7}  # llama_ftype values


# --- make ---


def _gguf(src: Path):
    sys.path.insert(0, str(src / "gguf-py"))
    import gguf

    return gguf


def _layer_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """numpy shapes (out, in) of one layer's tensors, named as llama.cpp names them."""
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or h // heads
    shapes = {
        "attn_norm": (h,),
        "attn_q": (heads * hd, h),
        "attn_k": (kv * hd, h),
        "attn_v": (kv * hd, h),
        "attn_output": (h, heads * hd),
        "ffn_norm": (h,),
        "ffn_gate": (f, h),
        "ffn_up": (f, h),
        "ffn_down": (h, f),
    }
    if "head_dim" in cfg:  # Qwen3's per-head q/k RMSNorm
        shapes |= {"attn_q_norm": (hd,), "attn_k_norm": (hd,)}
    return shapes


def _shape(family: str) -> tuple[dict, Path]:
    """The real shapes and the tiny fixture GGUF whose metadata and tokenizer are reused."""
    from benchlib import ROOT, fixtures_dir

    if family == "reranker":  # Qwen3-Reranker-0.6B, as bench_rerank.py builds it
        from bench_rerank import SHAPE

        return SHAPE, ROOT / "tests/fixtures/tiny-qwen3-reranker/gguf/tiny-qwen3-reranker-F32.gguf"
    from make_bench_models import SHAPES

    return SHAPES[family], fixtures_dir() / f"tiny-v5-{family}/gguf/v5-{family}-retrieval-F32.gguf"


def model_file(folder: Path, family: str, quant: str) -> Path:
    stem = "qwen3-reranker" if family == "reranker" else f"v5-{family}-retrieval"
    return folder / f"{stem}-{quant}.gguf"


def write_f16(family: str, out: Path, src: Path, seed: int) -> Path:
    """A full-size random-weight F16 GGUF with the tiny fixture's metadata and tokenizer."""
    gguf = _gguf(src)
    cfg, template = _shape(family)
    reader = gguf.GGUFReader(template)
    arch = ARCH[family]
    vocab = cfg["vocab_size"]
    writer = gguf.GGUFWriter(out, arch)
    shape_keys = {
        f"{arch}.block_count": cfg["num_hidden_layers"],
        f"{arch}.context_length": cfg["max_position_embeddings"],
        f"{arch}.embedding_length": cfg["hidden_size"],
        f"{arch}.feed_forward_length": cfg["intermediate_size"],
        f"{arch}.attention.head_count": cfg["num_attention_heads"],
        f"{arch}.attention.head_count_kv": cfg["num_key_value_heads"],
        f"{arch}.attention.key_length": cfg.get("head_dim"),
        f"{arch}.attention.value_length": cfg.get("head_dim"),
        "general.file_type": FTYPES["F16"],
    }
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # the writer adds these
        value = field.contents()
        if key in shape_keys:
            value = shape_keys[key]
        elif key == "tokenizer.ggml.tokens":
            value = value + [f"[PAD{i}]" for i in range(len(value), vocab)]
        elif key == "tokenizer.ggml.token_type":
            value = value + [int(gguf.TokenType.UNUSED)] * (vocab - len(value))
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub)
    n_vocab = len(writer.kv_data[0]["tokenizer.ggml.tokens"].value)
    rng = np.random.default_rng(seed)

    def weight(*shape):
        if len(shape) == 1:  # norms
            return np.ones(shape, np.float32)
        return (rng.standard_normal(shape, np.float32) * 0.02).astype(np.float16)

    writer.add_tensor("token_embd.weight", weight(n_vocab, cfg["hidden_size"]))
    for i in range(cfg["num_hidden_layers"]):
        for name, shape in _layer_shapes(cfg).items():
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(*shape))
    writer.add_tensor("output_norm.weight", weight(cfg["hidden_size"]))
    if family == "reranker":  # the converter's yes/no rank head
        writer.add_tensor("cls.output.weight", weight(2, cfg["hidden_size"]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def quantize(src: Path, dst: Path, ftype: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise SystemExit(f"llama_model_quantize failed for {dst}")


def make(args) -> None:
    from benchlib import log
    from make_bench_models import converter_dir

    src = converter_dir(args.llama_cpp_src)
    args.out.mkdir(parents=True, exist_ok=True)
    families = args.families + (["reranker"] if args.reranker else [])
    for seed, family in enumerate(families):
        f16, q8 = model_file(args.out, family, "F16"), model_file(args.out, family, "Q8_0")
        if not f16.is_file():
            log(f"writing {f16.name}")
            write_f16(family, f16.with_suffix(".tmp"), src, 1000 + seed).rename(f16)
        if not q8.is_file():
            log(f"quantizing {q8.name}")
            quantize(f16, q8, FTYPES["Q8_0"])
    for f in sorted(args.out.glob("*.gguf")):
        log(f"{f.stat().st_size / 1e6:9.1f} MB  {f}")


# --- run: variants in their own processes, interleaved rounds ---

WORKLOADS = {
    "1x20": (1, 20),
    "32x128": (32, 128),
    "4x512": (4, 512),
    "4x256": (4, 256),  # the reranker: 4 candidates of 256 document tokens
    "8x128": (8, 128),  # the profile's shorter stand-ins for 32x128 and 4x512
    "1x512": (1, 512),
}
# The reranker's prompt around each document (bench_rerank.py: the real tokenizer's counts).
RERANK_PREFIX, RERANK_SUFFIX = 83, 9
WORKER = (
    "import sys, json; sys.path[:0] = [{tree!r}, {here!r}]; import jinaloc;"  # the variant's tree
    " from bench_gguf import worker; worker(json.loads(sys.argv[1]))"
)


def token_batch(n: int, t: int, seed: int) -> list[list[int]]:
    """Random ids among the fixture tokenizer's real tokens: cost does not depend on them."""
    rng = np.random.default_rng(seed)
    return [[int(x) for x in rng.integers(10, 580, t)] for _ in range(n)]


def worker(cfg: dict) -> None:
    """One variant's process: jinaloc's GGUFBackend from its tree, one JSON command per line."""
    from jinaloc.backends import gguf
    from jinaloc.registry import ModelSpec

    inside = [0.0]
    decode = gguf.Context._decode

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return decode(*a, **k)
        finally:
            inside[0] += time.perf_counter() - t

    gguf.Context._decode = timed
    if cfg["flash"]:  # the experiment: flash attention for the short inputs too
        init = gguf._TaskModel.__init__

        def flash_short(self, model, threads):
            init(self, model, threads)
            self.short = gguf.Context(model, threads, flash=True)

        gguf._TaskModel.__init__ = flash_short
    if cfg["reranker"]:
        from jinaloc.backends.rerank_gguf import GGUFReranker

        reranker = GGUFReranker(Path(cfg["path"]), cfg["threads"])

        def call(batch):  # one query's candidates: a shared prompt, then each document
            prefix, suffix = (
                token_batch(1, RERANK_PREFIX, 0)[0],
                token_batch(1, RERANK_SUFFIX, 0)[0],
            )
            return reranker.score_tokens([prefix + doc + suffix for doc in batch])[:, None]
    else:
        backend = gguf.GGUFBackend(
            lambda task: Path(cfg["path"]), ModelSpec(name="bench"), cfg["threads"]
        )

        def call(batch):
            return backend.embed_tokens(batch, "retrieval")

    for line in sys.stdin:
        cmd = json.loads(line)
        batch = token_batch(*cmd["shape"], cmd["seed"])
        inside[0] = 0.0
        t, cpu = time.perf_counter(), time.process_time()
        vecs = call(batch)
        out = {"seconds": time.perf_counter() - t, "decode": inside[0]}
        out["cpu_seconds"] = time.process_time() - cpu  # all threads: spinning included
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if cmd.get("vectors"):
            out["vectors"] = vecs.tolist()
        print(json.dumps(out), flush=True)


class Variant:
    def __init__(self, kind: str, tree: Path, path: Path, threads: int, reranker: bool):
        self.name, self.threads = f"{kind}-t{threads}", threads
        code = WORKER.format(tree=str(tree), here=str(HERE))
        cfg = json.dumps(
            {"path": str(path), "threads": threads, "flash": kind == "flash", "reranker": reranker}
        )
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, cfg],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def call(self, shape, seed: int, vectors: bool = False) -> dict:
        self.proc.stdin.write(json.dumps({"shape": shape, "seed": seed, "vectors": vectors}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"variant {self.name} died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


class Int8Roof:
    """ONNX Runtime MatMulInteger (u8 x s8 -> s32), 512x1024x3072: issue 25's int8 GEMM roof."""

    def __init__(self, threads: list[int]):
        import onnxruntime as ort
        from onnx import TensorProto, helper

        m, k, n = 512, 1024, 3072
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
            "roof",
            [
                helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k]),
                helper.make_tensor_value_info("B", TensorProto.INT8, [k, n]),
            ],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        rng = np.random.default_rng(0)
        self.feed = {
            "A": rng.integers(0, 256, (m, k), dtype=np.uint8),
            "B": rng.integers(-127, 128, (k, n), dtype=np.int8),
        }
        self.ops = 2 * m * k * n
        self.sessions = {}
        for t in threads:
            so = ort.SessionOptions()
            so.intra_op_num_threads = t
            self.sessions[t] = ort.InferenceSession(model.SerializeToString(), so)
        self.samples: dict[int, list[float]] = {t: [] for t in threads}

    def sample(self) -> None:
        for t, sess in self.sessions.items():
            sess.run(None, self.feed)
            best = min(_seconds(lambda s=sess: s.run(None, self.feed)) for _ in range(3))
            self.samples[t].append(self.ops / best / 1e9)

    def gops(self, threads: int) -> float:
        return median(self.samples[threads])


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def useful_ops(
    family: str, tokens: int, attention: bool = True, outputs: int | None = None
) -> float:
    """Multiply-adds x 2 a sequence of `tokens` needs: the projections and attention (what
    the ONNX graph and PyTorch compute; no output head). `outputs`: the rows the last
    layer's FFN runs on (llama.cpp: the output tokens), all by default."""
    from make_bench_models import SHAPES

    c = SHAPES[family]
    h, f, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or h // heads
    linear = h * heads * hd * 2 + h * kv * hd * 2 + 3 * h * f
    attended = tokens if family == "nano" else (tokens + 1) / 2
    macs = layers * tokens * (linear + (2 * heads * hd * attended if attention else 0))
    if outputs is not None:
        macs -= (tokens - outputs) * 3 * h * f
    return 2 * macs


def run(args) -> None:
    from benchlib import log, machine, table, write_json

    roof = Int8Roof(args.threads)
    trees = {"before": args.before} if args.before else {}
    trees["after"] = HERE.parent
    if args.flash:
        trees["flash"] = HERE.parent
    rows, info = [], machine()
    log(f"machine: {info}")
    for family in args.families:
        path = model_file(args.models, family, args.quant)
        rr = family == "reranker"
        variants = [
            Variant(name, tree, path, t, rr)
            for t in args.threads
            for name, tree in trees.items()
            if not (rr and name == "flash")
        ]
        workloads = args.workloads or (["4x256"] if rr else ["1x20", "32x128", "4x512"])
        shapes = [WORKLOADS[w] for w in workloads]
        for v in variants:  # warm-up: the page cache, the first context
            v.call(WORKLOADS["1x20"], 0)
        samples: dict[tuple, list] = {}
        cos: dict[tuple, float] = {}
        for r in range(args.rounds):
            roof.sample()
            k = r % len(variants)
            for shape, w in zip(shapes, workloads, strict=True):
                vecs = {}
                for v in variants[k:] + variants[:k]:
                    res = v.call(shape, r + 1, vectors=r == 0)
                    vecs[v.name] = np.array(res.pop("vectors", []))
                    samples.setdefault((w, v.name), []).append(res)
                if r == 0:  # the same inputs in every variant: their vectors compared
                    ref = vecs[variants[0].name]
                    for name, x in vecs.items():
                        c = (
                            (x * ref).sum(1)
                            / np.linalg.norm(x, axis=1)
                            / np.linalg.norm(ref, axis=1)
                        )
                        cos[(w, name)] = float(c.min())
            log(f"{family} round {r + 1}/{args.rounds} load {os.getloadavg()[0]:.2f}")
        for v in variants:
            v.close()
        for (w, name), res in samples.items():
            n, t = WORKLOADS[w]
            sec = median(x["seconds"] for x in res)
            threads = int(name.rsplit("-t", 1)[1])
            gops = None if rr else useful_ops(family, t) * n / sec / 1e9
            rows.append(
                {
                    "family": family,
                    "workload": w,
                    "variant": name,
                    "ms": sec * 1000,
                    "cpu_ms": median(x["cpu_seconds"] for x in res) * 1000,
                    "tok_per_s": n * t / sec,
                    "in_decode": median(x["decode"] / x["seconds"] for x in res),
                    "gop_per_s": gops,
                    "int8_roof": roof.gops(threads),
                    "roof_fraction": None if rr else gops / roof.gops(threads),
                    "cos_vs_first": cos[(w, name)],
                    "peak_rss_mb": max(x["peak_rss_mb"] for x in res),
                    "rounds": len(res),
                }
            )
            if args.before and not name.startswith("before"):
                before = samples[(w, "before-" + name.split("-", 1)[1])]
                ratios = [b["seconds"] / a["seconds"] for a, b in zip(res, before, strict=True)]
                rows[-1]["speedup"] = median(ratios)
                cpu = [
                    b["cpu_seconds"] / a["cpu_seconds"] for a, b in zip(res, before, strict=True)
                ]
                rows[-1]["cpu_speedup"] = median(cpu)
    cols = [
        "family",
        "workload",
        "variant",
        "ms",
        "tok_per_s",
        "in_decode",
        "gop_per_s",
        "int8_roof",
        "roof_fraction",
        "speedup",
        "cpu_ms",
        "cpu_speedup",
        "cos_vs_first",
        "peak_rss_mb",
    ]
    print(table(rows, cols))
    info["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at the end: {info['load_avg_end']}; int8 roof GOP/s: {roof.samples}")
    write_json(args.json, {"machine": info, "rows": rows, "int8_roof": roof.samples})


# --- profile: time per ggml op, inside llama.cpp ---


def _category(op: str, name: str) -> str:
    name = name.split("-")[0]  # "kq-3": layer 3's
    if op == "MUL_MAT":
        if name == "result_output":
            return "output head (unused lm_head)"
        return "attention" if name in ("kq", "kqv") else "projections (Q8_0 GEMM)"
    if op in ("SOFT_MAX", "FLASH_ATTN_EXT", "CPY") or name == "v_cont":
        return "attention"
    return "other (norms, RoPE, SwiGLU, adds)"


def profile(args) -> None:
    """One thread, one workload: llama.cpp computes the graph node by node (an eval callback
    that asks for every node), and each node's time goes to its category."""
    import ctypes

    import llama_cpp

    from jinaloc.backends import gguf  # first: PYTHONPATH=<tree> profiles that tree's code
    from jinaloc.registry import ModelSpec

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    from benchlib import log, table  # after jinaloc: it puts this checkout on sys.path

    for fn in (lib.ggml_op_desc, lib.ggml_get_name):
        fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    spent: dict[str, float] = {}
    last = [0.0]

    @llama_cpp.ggml_backend_sched_eval_callback
    def on_node(t, ask, _user):
        if not ask:
            now = time.perf_counter()
            key = _category(lib.ggml_op_desc(t).decode(), lib.ggml_get_name(t).decode())
            spent[key] = spent.get(key, 0.0) + now - last[0]
            last[0] = time.perf_counter()
        return True

    defaults = llama_cpp.llama_context_default_params

    def with_callback():
        p = defaults()
        p.cb_eval = on_node
        return p

    llama_cpp.llama_context_default_params = with_callback
    decode = gguf.Context._decode

    def timed(*a, **k):
        last[0] = time.perf_counter()
        return decode(*a, **k)

    gguf.Context._decode = timed
    roof = Int8Roof([1])
    rows = []
    for family in args.families:
        path = model_file(args.models, family, args.quant)
        backend = gguf.GGUFBackend(lambda task, p=path: p, ModelSpec(name="bench"), 1)
        for w in args.workloads:
            n, t = WORKLOADS[w]
            backend.embed_tokens(token_batch(n, t, 0), "retrieval")  # warm-up
            roof.sample()
            spent.clear()
            start = time.perf_counter()
            backend.embed_tokens(token_batch(n, t, 1), "retrieval")
            total = time.perf_counter() - start
            roof.sample()  # before and after: the roof under the same load
            linear = useful_ops(family, t, attention=False, outputs=1 if family == "small" else t)
            for key, sec in sorted(spent.items(), key=lambda kv: -kv[1]):
                row = {"family": family, "workload": w, "part": key, "ms": sec * 1000}
                row["share"] = sec / total
                if key.startswith("projections"):
                    row["gop_per_s"] = linear * n / sec / 1e9
                    row["of_int8_roof"] = row["gop_per_s"] / median(roof.samples[1][-2:])
                rows.append(row)
            log(f"{family} {w}: {total * 1000:.0f} ms, load {os.getloadavg()[0]:.2f}")
            log(table(rows[-len(spent) :], ["part", "ms", "share", "gop_per_s", "of_int8_roof"]))
        backend.close()
    print(table(rows, ["family", "workload", "part", "ms", "share", "gop_per_s", "of_int8_roof"]))
    print(f"int8 roof (1 thread) GOP/s: {roof.samples[1]}; load {os.getloadavg()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="write the GGUFs (gguf-py of llama-cpp-python's sdist)")
    m.add_argument("--out", type=Path, default=DEFAULT_OUT)
    m.add_argument("--families", nargs="+", default=["nano", "small"], choices=list(ARCH))
    m.add_argument("--reranker", action="store_true", help="also Qwen3-Reranker-0.6B's shapes")
    m.add_argument("--llama-cpp-src", type=Path, help="llama.cpp tree with gguf-py")
    r = sub.add_parser("run", help="time variants in interleaved rounds")
    r.add_argument("--models", type=Path, default=DEFAULT_OUT)
    r.add_argument("--families", nargs="+", default=["nano", "small"], choices=list(ARCH))
    r.add_argument(
        "--workloads",
        nargs="+",
        choices=list(WORKLOADS),
        help="default: 1x20 32x128 4x512; reranker 4x256",
    )
    r.add_argument("--quant", default="Q8_0")
    r.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    r.add_argument("--rounds", type=int, default=3)
    r.add_argument("--before", type=Path, help="a source tree of the code before (git archive)")
    q = sub.add_parser("profile", help="time per ggml op (1 thread, this tree)")
    q.add_argument("--models", type=Path, default=DEFAULT_OUT)
    q.add_argument("--families", nargs="+", default=["nano", "small"], choices=list(ARCH))
    q.add_argument("--quant", default="Q8_0")
    q.add_argument("--workloads", nargs="+", default=["32x128", "4x512"], choices=list(WORKLOADS))
    r.add_argument("--flash", action="store_true", help="also: flash attention for short inputs")
    r.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.cmd == "make":
        make(args)
    elif args.cmd == "run":
        run(args)
    else:
        profile(args)


if __name__ == "__main__":
    main()

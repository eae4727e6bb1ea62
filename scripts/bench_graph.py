"""ONNX graphs side by side: the int8 graph of one git revision of jinaloc/backends/onnx/graph.py
against another's (or the work tree's), on the full-size random-weight models, with the int8
GEMM roof sampled every round.

Each variant is `REV[@CAP]`: the graph.py of git revision REV (`tree`: the work tree's file),
run with forward passes of at most CAP tokens (batch x padded length; 0 or none: the whole
call in one pass). Graphs are built once per graph.py content into --graphs. Every round runs
each variant once per shape, in an order rotated each round, and times ORT's int8 GEMM
(MatMulInteger u8 x s8, 512 x 1024 x 3072, 7-bit weights as jinaloc's qint8) once: the roof.
Reports median tokens/s, the median per-round ratio to the first variant, and the fraction of
the roof (model FLOPs per token as bench_embed.flops_per_token x tokens/s, over the median
of the roof samples taken between that shape's calls), plus the worst cosine of each
variant's vectors to the first variant's.

    python scripts/bench_graph.py --families nano --variants 42f9d00 tree tree@512 \
        --shapes 1x20 32x128 4x512 --rounds 5 --json ../bench-results/graph-nano.json
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embed import TASK, Int8Roof, flops_per_token  # noqa: E402
from benchlib import ROOT, bench_models_dir, log, machine, median, parser, table  # noqa: E402

from jinaloc.backends import onnx as onnx_backend  # noqa: E402
from jinaloc.backends.canonical import adapter_dir, merge_adapter, read_weights  # noqa: E402
from jinaloc.registry import detect_architecture  # noqa: E402

GRAPH = "jinaloc/backends/onnx/graph.py"


def graph_source(rev: str) -> str:
    if rev == "tree":
        return (ROOT / GRAPH).read_text()
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{GRAPH}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def load_graph_module(source: str, key: str):
    """graph.py of another revision, imported as a sibling of the current one (its relative
    imports resolve against this checkout's jinaloc)."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"jinaloc_graph_{key}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"jinaloc.backends.onnx._graph_{key}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def built_graph(rev: str, folder: Path, graphs: Path, quant: str) -> Path:
    source = graph_source(rev)
    key = hashlib.sha256(source.encode()).hexdigest()[:12]
    out = graphs / f"{folder.name}-{quant}-{key}"
    if (out / "model.onnx").is_file():
        return out / "model.onnx"
    module = load_graph_module(source, key)
    config = json.loads((folder / "config.json").read_text())
    log(f"building {folder.name} {quant} with graph.py of {rev} ({key})")

    def make(tmp: Path) -> None:
        weights = merge_adapter(read_weights(folder), adapter_dir(folder, TASK))
        module.build(config, detect_architecture(config), weights, tmp / "model.onnx", quant)
        del weights
        onnx_backend._save_optimized(tmp / "model.onnx")

    return onnx_backend.build_once(out, make, f"{rev} {folder.name}")


def passes(ids: np.ndarray, mask: np.ndarray, cap: int):
    """Row slices of at most `cap` tokens (batch x padded length), at least one row each."""
    rows = len(ids) if not cap else max(1, cap // ids.shape[1])
    for start in range(0, len(ids), rows):
        yield ids[start : start + rows], mask[start : start + rows]


def shape_batches(spec: str, vocab: int, rounds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`NxT`: N rows of random token ids, lengths T down to 0.8 T (right padded)."""
    n, _, t = spec.partition("x")
    n, t = int(n), int(t)
    rng = np.random.default_rng(7)
    out = []
    for _ in range(rounds):
        lengths = np.sort(rng.integers(max(1, int(t * 0.8)), t + 1, n))[::-1]
        lengths[0] = t
        ids = np.zeros((n, t), np.int64)
        mask = np.zeros((n, t), np.int64)
        for i, k in enumerate(lengths):
            ids[i, :k] = rng.integers(1000, vocab, k)
            mask[i, :k] = 1
        out.append((ids, mask))
    return out


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, help="folder with bench-v5-nano/ and bench-v5-small/")
    p.add_argument("--graphs", type=Path, default=ROOT.parent / "bench-graphs")
    p.add_argument("--families", nargs="+", default=["nano", "small"])
    p.add_argument("--variants", nargs="+", default=["HEAD", "tree"], help="REV[@CAP]")
    p.add_argument("--shapes", nargs="+", default=["1x20", "32x128", "4x512"])
    p.add_argument("--quant", default="qint8")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--build-only", action="store_true")
    args = p.parse_args()
    base = args.models or bench_models_dir()
    rows = []
    roof = Int8Roof()
    load = os.getloadavg()
    for family in args.families:
        folder = base / f"bench-v5-{family}"
        config = json.loads((folder / "config.json").read_text())
        causal = "head_dim" in config
        sessions = {}
        for v in args.variants:
            rev, _, cap = v.partition("@")
            path = built_graph(rev, folder, args.graphs, args.quant)
            if not args.build_only:
                sessions[v] = (onnx_backend.open_session(path, 1), int(cap or 0))
        if args.build_only:
            continue
        for spec in args.shapes:
            batches = shape_batches(spec, int(config["vocab_size"]), args.rounds)
            flop = flops_per_token(config, batches[0][0].shape[1], causal)
            times: dict[str, list[float]] = {v: [] for v in sessions}
            vectors: dict[str, np.ndarray] = {}
            for v, (session, cap) in sessions.items():  # warm-up, and the vectors
                ids, mask = batches[0]
                vectors[v] = np.concatenate(
                    [session.run(["pooled"], {"input_ids": i, "attention_mask": m})[0]
                     for i, m in passes(ids, mask, cap)]
                )  # fmt: skip
            names = list(sessions)
            roof_at = len(roof.samples)
            for r in range(args.rounds):
                roof.sample()
                ids, mask = batches[r]
                for v in names[r % len(names) :] + names[: r % len(names)]:
                    session, cap = sessions[v]
                    t = time.perf_counter()
                    for i, m in passes(ids, mask, cap):
                        session.run(["pooled"], {"input_ids": i, "attention_mask": m})
                    times[v].append(time.perf_counter() - t)
            shape_roof = median(roof.samples[roof_at:])  # sampled between this shape's calls
            tokens = [int(b[1].sum()) for b in batches]
            first = names[0]
            ref = vectors[first] / np.linalg.norm(vectors[first], axis=1, keepdims=True)
            for v in names:
                rates = [tokens[r] / s for r, s in enumerate(times[v])]
                ratio = [times[first][r] / s for r, s in enumerate(times[v])]
                got = vectors[v] / np.linalg.norm(vectors[v], axis=1, keepdims=True)
                rows.append(
                    {
                        "family": family,
                        "variant": v,
                        "shape": spec,
                        "rounds": len(rates),
                        "tok_per_s": median(rates),
                        "ms_per_call": 1000 * median(times[v]),
                        f"vs_{first}": median(ratio),
                        "gop_per_s": median(rates) * flop / 1e9,
                        "roof_gops": shape_roof,
                        "roof_fraction": median(rates) * flop / 1e9 / shape_roof,
                        "min_cos_to_first": float((got * ref).sum(1).min()),
                    }
                )
            log(f"{family} {spec}: done (roof {roof.gops():.0f} GOP/s so far)")
        del sessions
    if args.build_only:
        return
    cols = ["family", "variant", "shape", "rounds", "tok_per_s", "ms_per_call"]
    cols += [f"vs_{args.variants[0]}", "gop_per_s", "roof_gops", "roof_fraction"]
    cols += ["min_cos_to_first"]
    print(table(rows, cols))
    roof_summary = {
        "median_gops": roof.gops(),
        "max_gops": max(roof.samples),
        "n": len(roof.samples),
    }
    print(f"int8 roof (ORT MatMulInteger 512x1024x3072, 1 thread): {roof_summary}")
    print(f"load average before/after: {load} / {os.getloadavg()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "roof": roof_summary,
                    "load_before_after": [load, os.getloadavg()],
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()

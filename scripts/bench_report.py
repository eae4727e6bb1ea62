"""Markdown tables from the benchmark scripts' JSON files (for docs/benchmarks.md).

python scripts/bench_report.py [--embed E.json] [--index I.json] [--search S.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import table  # noqa: E402


def fmt_targets(targets: list[dict]) -> str:
    return "\n".join(
        f"- {t['target']}: **{t['value']:.3g}**"
        + (f" (cos {t['cos']:.4f})" if t.get("cos") is not None else "")
        + f" ({'met' if t['met'] else 'missed'})"
        for t in targets
    )


def embed_report(data: dict) -> str:
    out = [f"Machine load (1/5/15 min) at the end: {data['machine'].get('load_avg_1_5_15')}", ""]
    roof = data["roof_gflops"]
    samples = {k: v for k, v in roof.items() if isinstance(v, dict)}
    out.append(
        f"Matmul fp32 {roof['shape']}: "
        + ", ".join(
            f"{k} median {v['median']:.1f} GFLOP/s (max {v['max']:.1f}, {v['samples']} samples)"
            for k, v in samples.items()
        )
    )
    out.append("")
    for family in dict.fromkeys(r["family"] for r in data["results"]):
        rows = [r for r in data["results"] if r["family"] == family]
        out += [f"#### {family}", ""]
        cols = ["runtime", "workload", "mode", "texts", "tokens_per_text", "tok_per_s"]
        cols += ["ms_per_call", "vs_pytorch", "roof_fraction"]
        # Peak RSS of the runtime alone (--rss), else what loading it added to the bench process.
        if any(r.get("peak_rss_mb") for r in rows):
            cols.append("peak_rss_mb")
        elif any(r.get("rss_added_mb") for r in rows):
            cols.append("rss_added_mb")
        out += [table(rows, cols), ""]
    cos = data.get("cosine_vs_pytorch")
    if cos:
        by = {}
        for c in cos:
            key = (c["family"], c["runtime"])
            by[key] = min(by.get(key, 1.0), c["min_cos"])
        rows = [{"family": f, "runtime": r, "min_cos": f"{v:.5f}"} for (f, r), v in by.items()]
        out += ["Cosine against PyTorch fp32 (worst text, all workloads):", ""]
        out += [table(rows, ["family", "runtime", "min_cos"]), ""]
    if data.get("skipped"):
        out += [f"Skipped: {data['skipped']}", ""]
    out.append(fmt_targets(data["targets"]))
    return "\n".join(out)


def index_report(data: dict) -> str:
    cols = ["family", "quant", "dim", "files", "chunks", "tokens", "index_s", "load_s", "embed_s"]
    cols += ["embed_tok_per_s", "overhead", "overhead_with_load"]
    return "\n".join([table(data["results"], cols), "", fmt_targets(data["targets"])])


def search_report(data: dict) -> str:
    rows = data["results"]
    base = any("base_exact_p50_ms" in r for r in rows)

    def cols(*names: str) -> list[str]:
        return [c for c in names if any(c in r for r in rows)]

    out = ["p50 ms (recall@10 against numpy's exact top 10):", ""]
    latency = cols(
        "n", "dim", "queries", "numpy_p50_ms", "numpy_load_p50_ms", "exact_p50_ms",
        "exact_warm_p50_ms", "base_exact_p50_ms", "bits_p50_ms", "base_bits_p50_ms",
        "two_stage_p50_ms", "base_two_stage_p50_ms", "recall_two_stage", "base_recall_two_stage",
    )  # fmt: skip
    out += [table(rows, latency), ""]
    out += ["p95 ms:", ""]
    p95 = cols("n", "dim", "exact_p95_ms", "exact_warm_p95_ms", "bits_p95_ms", "two_stage_p95_ms")
    out += [table(rows, p95 + (["base_two_stage_p95_ms"] if base else [])), ""]
    refs = cols(
        "n", "dim", "faiss_flat_p50_ms", "faiss_ivf_p50_ms", "recall_faiss_ivf",
        "faiss_ivf_build_s", "faiss_hnsw_p50_ms", "recall_faiss_hnsw", "faiss_hnsw_build_s",
    )  # fmt: skip
    out += ["faiss (a reference ANN library) on the same vectors:", "", table(rows, refs), ""]
    write = cols(
        "n", "dim", "write_chunks_per_s", "base_write_chunks_per_s", "bytes_per_chunk",
        "base_bytes_per_chunk",
    )  # fmt: skip
    write += sorted({c for r in rows for c in r if c.startswith("redim_")})
    out += ["Writing through `Store.write_file` (1000 chunks per file), size, re-dims:", ""]
    out += [table(rows, write), ""]
    sweep = data["args"].get("sweep") or []
    for prefix in ("", "base_") if base else ("",):
        view = []
        for r in rows:
            v = {"n": r["n"], "dim": r["dim"]}
            for c in sweep:
                v[f"top{c} ms"] = r.get(f"{prefix}sweep_{c}_p50_ms")
                v[f"top{c} recall"] = r.get(f"{prefix}recall_sweep_{c}")
            view.append(v)
        which = "before" if prefix else "this layout"
        out += [f"Coarse-stage candidates, {which} (bits top-N, then float rescoring):", ""]
        out += [table(view, list(view[0])), ""]
    out.append(fmt_targets(data["targets"]))
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--embed", type=Path)
    p.add_argument("--index", type=Path)
    p.add_argument("--search", type=Path)
    args = p.parse_args()
    for path, render in ((args.embed, embed_report), (args.index, index_report)):
        if path:
            print(render(json.loads(path.read_text())), end="\n\n")
    if args.search:
        print(search_report(json.loads(args.search.read_text())))


if __name__ == "__main__":
    main()

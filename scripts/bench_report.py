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
    cols = ["n", "dim", "queries", "exact_p50_ms", "exact_p95_ms", "bits_p50_ms", "bits_p95_ms"]
    cols += ["two_stage_p50_ms", "two_stage_p95_ms", "numpy_p50_ms", "numpy_p95_ms"]
    cols += ["recall_two_stage", "recall_bits", "two_stage_vs_exact", "bytes_per_chunk"]
    out = [table(rows, cols), ""]
    write = [{**r, "write_min": (r["write_s"] or 0) / 60} for r in rows if r.get("write_s")]
    if write:
        out += ["Writing through `Store.write_file` (1000 chunks per file):", ""]
        out += [table(write, ["n", "dim", "write_min", "write_chunks_per_s"]), ""]
    sweep = data["args"].get("sweep") or []
    if sweep:
        view = []
        for r in rows:
            v = {"n": r["n"], "dim": r["dim"]}
            for c in sweep:
                v[f"top{c} ms"] = r[f"sweep_{c}_p50_ms"]
                v[f"top{c} recall"] = r[f"recall_sweep_{c}"]
            view.append(v)
        out += ["Coarse-stage candidates (bits top-N, then float rescoring): p50 ms, recall@10", ""]
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

"""Chunk shapes on a real vault, this tree beside another: `jinaloc index VAULT` run by each
source tree in its own process and index, then the chunks each wrote, read from the index.

Reported per tree: files and chunks, chunk sizes (raw tokens as the chunker counted them:
min, 10th percentile, median, 90th, max), chunks of 9 tokens or fewer and under 1/8 of the
budget, the share of all chunks held by the biggest file and by the top 1% of files (the
index summary's crowding rule), the biggest files, and the chunks the model truncated (the
run's own report). Token counts are exact for the model's tokenizer; the tiny fixture (the
default) has a tokenizer trained on a few KB of English, so CJK text and runs of spaces or
dashes cost it several times what a real model's tokenizer does: it is the harsh case.

    python scripts/bench_chunking.py VAULT --before OLD_TREE [--model DIR] [--backend B]
        [--chunk-tokens N] [--show REL ...] [--json PATH]

The Obsidian help vault used in docs/chunking.md: github.com/obsidianmd/obsidian-help, its
en/ and zh/ folders with the files `jinaloc index` takes by default (*.md, zh/*.txt).
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, fixtures_dir, log, machine, parser, percentile, table, write_json  # noqa: E402


def index_with(tree: Path, vault: Path, db: Path, model: list[str]) -> dict:
    """`jinaloc index` as `tree` has it; its --json report."""
    out = subprocess.run(
        [sys.executable, "-m", "jinaloc", "index", str(vault), "--db", str(db), "--json", "-q"]
        + model,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"jinaloc index in {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def cuts_a_link(text: str) -> bool:
    """A chunk like `[[Obsidian` or `Sync|Obsidian Sync]]`: it starts or ends inside a
    wikilink (outside inline code)."""
    text = re.sub(r"`[^`\n]*`|\\\[|\\\]", "", text)
    first_close, first_open = text.find("]]"), text.find("[[")
    return (first_close != -1 and (first_open == -1 or first_close < first_open)) or (
        text.rfind("[[") > text.rfind("]]")
    )


def shapes(db: Path, vault: Path, budget: int, report: dict, show: list[str]) -> dict:
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT f.path, c.tokens, c.text FROM chunks c JOIN files f ON f.id = c.file_id"
    ).fetchall()
    conn.close()
    per_file: dict[str, int] = {}
    for path, _, _ in rows:
        per_file[path] = per_file.get(path, 0) + 1
    sizes = [t for _, t, _ in rows]
    top = sorted(per_file.items(), key=lambda item: -item[1])
    top1 = top[: math.ceil(len(top) * 0.01)]
    return {
        "files": len(per_file),
        "chunks": len(rows),
        "tokens_min": min(sizes),
        "tokens_p10": percentile(sizes, 10),
        "tokens_median": percentile(sizes, 50),
        "tokens_p90": percentile(sizes, 90),
        "tokens_max": max(sizes),
        "chunks_le_9_tokens": sum(t <= 9 for t in sizes),
        "chunks_under_budget_8th": sum(t * 8 < budget for t in sizes),
        "chunks_cutting_a_wikilink": sum(cuts_a_link(x) for _, _, x in rows),
        "biggest_file_share": top[0][1] / len(rows),
        "top_1pct_files_share": sum(n for _, n in top1) / len(rows),
        "biggest_files": [
            {"path": str(Path(p).relative_to(vault)), "chunks": n} for p, n in top[:6]
        ],
        "shown_files": {rel: per_file.get(str(vault / rel), 0) for rel in show},
        "truncated_chunks": report["truncated"],
        "truncated_files": len({t["path"] for t in report["truncated_files"]}),
        "crowding_files": [
            str(Path(c["path"]).relative_to(vault)) for c in report.get("crowding_files", [])
        ],
    }


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("vault", type=Path)
    p.add_argument("--before", type=Path, required=True, help="the other source tree")
    p.add_argument("--model", help="model (default: the tiny nano fixture)")
    p.add_argument("--backend", default="gguf")
    p.add_argument("--quant", help="(default: the backend's own)")
    p.add_argument("--chunk-tokens", type=int, default=512)
    p.add_argument(
        "--show", action="append", default=[], help="a file (relative) whose chunks to count"
    )
    args = p.parse_args()
    fixtures = fixtures_dir()
    model = args.model or (str(fixtures / "tiny-v5-nano") if fixtures else None)
    if model is None:
        raise SystemExit("no model: pass --model (or set JINALOC_FIXTURES)")
    opts = ["--model", model, "--backend", args.backend, "--chunk-tokens", str(args.chunk_tokens)]
    opts += ["--quant", args.quant] if args.quant else []
    vault = args.vault.resolve()
    results = {"machine": machine(), "vault": str(vault), "model": model, "trees": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, tree in (("before", args.before.resolve()), ("after", ROOT)):
            log(f"indexing with {name} ({tree})")
            db = Path(tmp) / f"{name}.db"
            report = index_with(tree, vault, db, opts)
            results["trees"][name] = {
                "tree": str(tree),
                **shapes(db, vault, args.chunk_tokens, report, args.show),
            }
    rows = [{"tree": k, **v} for k, v in results["trees"].items()]
    print(
        table(
            rows,
            [
                "tree",
                "files",
                "chunks",
                "tokens_min",
                "tokens_p10",
                "tokens_median",
                "tokens_p90",
                "tokens_max",
                "chunks_le_9_tokens",
                "chunks_under_budget_8th",
                "chunks_cutting_a_wikilink",
                "biggest_file_share",
                "top_1pct_files_share",
                "truncated_chunks",
                "truncated_files",
            ],
        )  # fmt: skip
    )
    for name, r in results["trees"].items():
        files = ", ".join(f"{f['path']} ({f['chunks']})" for f in r["biggest_files"])
        print(f"\n{name}: biggest files: {files}; crowding named: {r['crowding_files']}")
        print(f"{name}: chunks of {r['shown_files']}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()

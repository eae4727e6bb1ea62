"""What the notes file selection saves on a vault with assets: `jinaloc index` on a generated
Obsidian-like vault (Markdown notes, SVG icons, CSS, plugin JS, JSON data, a CSV export), by
default and with `--include '*'` (every text file, as jinaloc indexed before file types).

Files, chunks and tokens embedded are exact for the tokenizer of the model used; the seconds
are those of that model (the tiny fixture by default: its speed says nothing about a real
model's, its token counts do, as it has the real tokenizer). Rounds alternate the two ways.

    python scripts/bench_vault.py [--notes 200] [--rounds 2] [--model DIR] [--json PATH]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import make_corpus  # noqa: E402
from benchlib import ROOT, fixtures_dir, log, machine, median, parser, table, write_json  # noqa: E402

WAYS = {"notes (default)": [], "every text file (--include '*')": ["--include", "*"]}


def make_assets(vault: Path, rng: np.random.Generator) -> dict[str, int]:
    """Assets as a vault gathers them: icons, a theme, plugins, data files, an export."""
    counts = {}

    def write(rel: str, text: str) -> None:
        path = vault / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        counts[path.suffix] = counts.get(path.suffix, 0) + 1

    for i in range(324):
        points = " ".join(
            f"{x:.2f},{y:.2f}" for x, y in rng.random((int(rng.integers(20, 80)), 2)) * 24
        )
        write(
            f"attachments/icons/icon-{i:03d}.svg",
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">'
            f'<polyline points="{points}"/></svg>\n',
        )
    for i in range(12):
        rules = "\n".join(
            f".cm-line-{j} {{ color: #{int(rng.integers(0, 2**24)):06x}; margin: {j}px; }}"
            for j in range(150)
        )
        write(f"snippets/theme-{i}.css", rules + "\n")
    for i in range(3):
        body = "\n".join(
            f"function handler{j}(app, view) {{ return app.workspace.getLeaf({j}).open(view); }}"
            for j in range(800)
        )
        write(f"plugins/plugin-{i}/main.js", body + "\n")
    for i in range(20):
        data = {f"key{j}": {"value": float(rng.random()), "label": f"item {j}"} for j in range(200)}
        write(f"plugins/data-{i}.json", json.dumps(data, indent=2) + "\n")
    rows = "\n".join(f"{j},{rng.random():.4f},item {j}" for j in range(3000))
    write("exports/reading-log.csv", "id,score,label\n" + rows + "\n")
    return counts


def run_index(vault: Path, db: Path, model: list[str], extra: list[str]) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "jinaloc", "index", str(vault), "--db", str(db), "--json", "-q"]
    start = time.perf_counter()
    out = subprocess.run([*cmd, *model, *extra], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"index failed: {out.stderr}")
    return json.loads(out.stdout), seconds


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--notes", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--model", type=Path, help="model folder (default: the tiny nano fixture)")
    args = p.parse_args()
    if args.quick:
        args.notes, args.rounds = 20, 1
    folder = args.model or (fixtures_dir() or Path("missing")) / "tiny-v5-nano"
    model = ["--model", str(folder), "--backend", "gguf", "--offline"]
    if args.model is None:
        model += ["--quant", "F32"]
    results: dict[str, list] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="jinaloc-bench-vault-") as tmp:
        vault = Path(tmp) / "vault"
        make_corpus(vault, args.notes)
        assets = make_assets(vault, np.random.default_rng(0))
        log(f"vault: {args.notes} notes, assets {assets}")
        for r in range(args.rounds):
            for n, (way, extra) in enumerate(WAYS.items()):
                db = Path(tmp) / f"round{r}-{n}.db"
                report, seconds = run_index(vault, db, model, extra)
                results[way].append((report, seconds))
                log(f"round {r + 1} {way}: {report['chunks_embedded']} chunks, {seconds:.1f} s")
    rows = []
    for way, runs in results.items():
        report = runs[0][0]
        rows.append(
            {
                "files": way,
                "indexed": report["added"],
                "left out": report["left_out"],
                "chunks": report["chunks_embedded"],
                "tokens": report["tokens"],
                "seconds (median)": median([s for _, s in runs]),
            }
        )
    print(table(rows, list(rows[0])))
    write_json(
        args.json,
        {
            "machine": machine(),
            "notes": args.notes,
            "assets": assets,
            "model": str(folder),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()

"""A cold `jinaloc search` on a big index, split into phases, and `jinaloc --help`.

Builds an index of --chunks synthetic chunks: a few notes indexed by `jinaloc index` with the
model (so the index's settings are jinaloc's own), then --chunks clustered unit vectors at the
index's dim with word-salad texts written through Store.write_file (no embedding of 100k
chunks). Then, per round, order alternating between the trees (A B B A ...), each in a fresh
process with the working directory outside every tree:

- whole process: `jinaloc search Q --db DB --json --no-server` (hybrid, and with
  `--mode lexical`), `jinaloc --help`, `jinaloc search --help`;
- phases of the same search, from a probe that runs the same entry point with timers wrapped
  around the CLI's own functions: start-up (process start to the index being opened: Python,
  imports, CLI parse), open (the index file), model load, query embedding, search (the rest
  of Index.search: vector and lexical stages, fusion), output, and close + exit.

The trees are this checkout and, with --before REV, that git revision (`git archive`), so a
change is measured side by side with what it replaces. Outputs of all trees must be equal.

    python scripts/bench_cold.py [--before REV] [--chunks 100000] [--dim 768] [--rounds 10]
                                 [--model DIR] [--backend gguf|onnx] [--quant Q8_0]
                                 [--threads 1] [--json PATH]

Default model: the full-size random-weight nano from make_bench_models.py when present (GGUF),
else the tiny fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import clustered  # noqa: E402
from bench_serve import QUERY, SAMPLE, default_model, env_for, make_notes  # noqa: E402
from benchlib import (  # noqa: E402
    ROOT,
    call_in_tree,
    log,
    machine,
    median,
    parser,
    table,
    tree_of,
    write_json,
)

from jinaloc.index.store import NewChunk, Store  # noqa: E402
from jinaloc.vectors import l2_normalize  # noqa: E402

CHUNKS_PER_FILE = 10
# Import costs named in the report (cumulative ms where first imported, from -X importtime).
MODULES = (
    "jinaloc.cli",
    "typer",
    "typer._adapters",  # Typer's pydantic coercion, loaded when a command parses its options
    "jinaloc.index.session",
    "numpy",
    "jinaloc.index.search",
    "jinaloc.embedder",
    "llama_cpp",
    "onnxruntime",
    "onnx",
)
PHASES = ("startup", "open", "model_load", "query_embed", "search", "output", "close_exit")

# Runs the CLI's entry point with timers around its own functions; prints the marks as JSON
# on stderr's last line. `spawn` (argv[1]) is the parent's time.time() just before starting us.
PROBE = """
import json, sys, time
spawn = float(sys.argv[1])
sys.argv = ["jinaloc", *sys.argv[2:]]
marks, active = {}, set()

def timed(name, fn, first=None):
    def wrapper(*args, **kwargs):
        if first and first not in marks:
            marks[first] = time.time() - spawn
        if name in active:  # embed calling embed_with_counts counts once
            return fn(*args, **kwargs)
        active.add(name)
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            active.discard(name)
            marks[name] = marks.get(name, 0.0) + time.perf_counter() - t
    return wrapper

import jinaloc.cli.index as cli
from jinaloc.index import Index

load = cli.load_embedder

def load_timed(*args, **kwargs):
    embedder = timed("model_load", load)(*args, **kwargs)
    for method in ("embed", "embed_with_counts"):
        setattr(embedder, method, timed("query_embed", getattr(embedder, method)))
    return embedder

cli.load_embedder = load_timed
cli._open_index = timed("open", cli._open_index, first="startup")
Index.search = timed("index_search", Index.search)
cli._print_hits = timed("output", cli._print_hits)
from jinaloc.entry import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code
marks["main_done"] = time.time() - spawn
sys.stderr.write("\\nMARKS " + json.dumps(marks) + "\\n")
sys.exit(code)
"""
# What the `jinaloc` console script runs.
ENTRY = "import sys; from jinaloc.entry import main; sys.exit(main())"


def build(db: str, root: str, n: int, seed: int) -> tuple[float, int]:
    """Add n synthetic chunks (clustered unit vectors at the index's dim) to an index, as
    files under one of its roots, written to disk too (search never shows a missing file).
    Returns the seconds it took and the dim. Run by `call_in_tree` in the tree being measured:
    each tree writes its own index in its own schema."""
    root = Path(root)
    start = time.perf_counter()
    store = Store.open(db, create=False)
    dim = int(store.meta()["dim"])
    rng = np.random.default_rng([seed, n, dim])
    centers = l2_normalize(rng.standard_normal((max(1, n // 100), dim)))
    vectors = clustered(rng, centers, n)
    words = np.array(SAMPLE.split())
    (root / "synthetic").mkdir(exist_ok=True)  # the same files for every tree
    for f, first in enumerate(range(0, n, CHUNKS_PER_FILE)):
        chunks = [
            NewChunk(i, i, [], " ".join(rng.choice(words, 40)), 60, f"{i:x}", v)
            for i, v in enumerate(vectors[first : first + CHUNKS_PER_FILE], first)
        ]
        rel = f"synthetic/{f}.md"
        (root / rel).write_text("\n\n".join(c.text for c in chunks) + "\n")
        store.write_file(str(root / rel), str(root), rel, f"{f:x}", 0, 0, f"note {f}", chunks)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return time.perf_counter() - start, dim


def hit_keys(out: str) -> tuple:
    """The hits of a `search --json`, by place (scores differ in the last digits between
    layouts that keep vectors at different precision)."""
    return tuple((r["path"], r["start_line"]) for r in json.loads(out))


def wall(cmd: list[str], env: dict, cwd: Path, ok=(0,)) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in ok:
        raise SystemExit(f"{cmd[3:]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, proc.stdout


def import_costs(args: list[str], env: dict, cwd: Path, runs: int = 3) -> dict:
    """Median over `runs` of a run's total import ms and of the cumulative ms of MODULES
    where first imported (None: not imported)."""
    samples = [_import_costs(args, env, cwd) for _ in range(runs)]
    return {
        key: None if samples[0][key] is None else round(median([s[key] for s in samples]), 1)
        for key in samples[0]
    }


def _import_costs(args: list[str], env: dict, cwd: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", ENTRY, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    costs, total = {}, 0.0
    for line in proc.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue
        name, ms = fields[2].rstrip(), int(fields[1]) / 1000
        if not name.startswith("  "):  # imported at top level: adds to the total
            total += ms
        if name.strip() in MODULES:
            costs[name.strip()] = ms
    return {"total_ms": total, **{m: costs.get(m) for m in MODULES}}


def phases(args: list[str], env: dict, cwd: Path) -> tuple[dict, str]:
    """One probed run: seconds per phase, and stdout."""
    spawn = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, repr(spawn), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    total = time.time() - spawn
    if proc.returncode != 0:
        raise SystemExit(f"probe failed ({proc.returncode}): {proc.stderr[-2000:]}")
    m = json.loads(proc.stderr.rsplit("MARKS ", 1)[1])
    inner = m["model_load"] + m["query_embed"]
    out = {
        "startup": m["startup"],
        "open": m["open"],
        "model_load": m["model_load"],
        "query_embed": m["query_embed"],
        "search": m["index_search"] - inner,  # Index.search less the lazy load and embedding
        "output": m["output"],
        "close_exit": total - m["startup"] - m["open"] - m["index_search"] - m["output"],
        "total": total,
    }
    return out, proc.stdout


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--before", help="git revision to compare with (e.g. main)")
    p.add_argument("--chunks", type=int, default=100_000)
    p.add_argument("--dim", type=int, help="the index's dim (default: jinaloc's for the model)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--model")
    p.add_argument("--quant")
    p.add_argument("--backend", default="gguf", choices=["gguf", "onnx"])
    p.add_argument("--threads", type=int, default=1, help="JINALOC_THREADS (busy machine: 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    model, _, quant = default_model(args.backend)
    model, quant = args.model or model, args.quant or quant
    chunks = 2000 if args.quick else args.chunks
    rounds = 2 if args.quick else args.rounds
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {"after": ROOT}
        if args.before:
            trees = {"before": tree_of(args.before, tmp / "before"), **trees}
        state = tmp / "state"
        env = env_for(state, args.threads)
        envs = {name: {**env, "PYTHONPATH": str(tree)} for name, tree in trees.items()}
        model_args = ["--model", model, "--backend", args.backend]
        if args.backend == "gguf" or args.quant:  # ONNX: its own default quant
            model_args += ["--quant", quant]
        dim_args = ["--dim", str(args.dim)] if args.dim else []
        # Each tree its own index of the same notes, in its own schema.
        notes = tmp / "notes"
        notes.mkdir()
        make_notes(notes, 3)
        dbs = {name: tmp / f"{name}.db" for name in trees}
        for name in trees:  # the 3 notes embedded, before any synthetic file exists
            index = [py, "-c", ENTRY, "index", str(notes), "--db", str(dbs[name]), *model_args]
            wall([*index, *dim_args, "--no-server", "-q"], envs[name], tmp)
        for name, tree in trees.items():
            log(f"{name}: writing {chunks:,} synthetic chunks")
            build_s, dim = call_in_tree(
                tree, "bench_cold", "build", str(dbs[name]), str(notes.resolve()), chunks, args.seed
            )
            size = dbs[name].stat().st_size / 1e6
            log(f"dim {dim}: {build_s:.1f} s ({chunks / build_s:,.0f} chunks/s), {size:.0f} MB")

        search = ["search", QUERY, "--json", "--no-server"]
        searches = {name: [*search, "--db", str(dbs[name])] for name in trees}
        commands = {"--help": ["--help"], "search --help": ["search", "--help"]}
        times = {(t, c): [] for t in trees for c in [*commands, "probed search"]}
        split = {t: {ph: [] for ph in (*PHASES, "total")} for t in trees}
        outputs = set()
        lexical = {name: [*searches[name], "--mode", "lexical"] for name in trees}
        times |= {(t, "search"): [] for t in trees} | {(t, "lexical search"): [] for t in trees}
        for name in trees:  # warm-up: page cache, .pyc files
            wall([py, "-c", ENTRY, *searches[name]], envs[name], tmp)
        for r in range(rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in order:
                seconds, out = wall([py, "-c", ENTRY, *searches[name]], envs[name], tmp)
                times[(name, "search")].append(seconds)
                outputs.add(hit_keys(out))
                # Exit 1 (no lexical hit in the word salad) is a search all the same.
                seconds, out = wall([py, "-c", ENTRY, *lexical[name]], envs[name], tmp, (0, 1))
                times[(name, "lexical search")].append(seconds)
                for command, cmd_args in commands.items():
                    seconds, out = wall([py, "-c", ENTRY, *cmd_args], envs[name], tmp)
                    times[(name, command)].append(seconds)
                marks, out = phases(searches[name], envs[name], tmp)
                outputs.add(hit_keys(out))
                times[(name, "probed search")].append(marks["total"])
                for ph, seconds in marks.items():
                    split[name][ph].append(seconds)
            log(f"round {r + 1}/{rounds}")
        # The trees may rank near-ties apart (vectors kept at other precision, other
        # candidate counts): say how much they share rather than fail.
        shared = set.intersection(*(set(o) for o in outputs))
        hits = max(len(o) for o in outputs)
        if len(outputs) != 1:
            log(f"the trees' results differ: {len(shared)} of {hits} hits in common")
        imports = {t: import_costs(searches[t], envs[t], tmp) for t in trees}
        shutil.rmtree(tmp / "before", ignore_errors=True)

    rows = [
        {"tree": t, "run": c, "median_ms": median(xs) * 1000, "min_ms": min(xs) * 1000}
        for (t, c), xs in times.items()
    ]
    phase_rows = [
        {"tree": t, **{ph: median(xs) * 1000 for ph, xs in split[t].items()}} for t in trees
    ]
    for row in phase_rows:
        row["startup_plus_search"] = row["startup"] + row["open"] + row["search"]
    results = {
        "command": " ".join(["python scripts/bench_cold.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_avg_at_start": load_at_start,
        "machine": machine(),
        "model": model,
        "backend": args.backend,
        "quant": quant if args.backend == "gguf" or args.quant else "the backend's default",
        "threads": args.threads,
        "chunks": chunks,
        "dim": dim,
        "hits": hits,
        "hits_in_common": len(shared),
        "result_sets": len(outputs),
        "rounds": rounds,
        "before": args.before,
        "build_seconds": build_s,
        "whole_process": rows,
        "imports_of_search_ms": imports,
        "phases_median_ms": phase_rows,
        "note": "startup_plus_search = startup + open + search (the issue's target: < 250 ms)",
    }
    print(table(rows, ["tree", "run", "median_ms", "min_ms"]))
    print(table(phase_rows, ["tree", *PHASES, "total", "startup_plus_search"]))
    print(table([{"tree": t, **c} for t, c in imports.items()], ["tree", "total_ms", *MODULES]))
    log(f"load average: {machine()['load_avg_1_5_15']}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()

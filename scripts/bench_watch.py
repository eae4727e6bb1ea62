"""`jinaloc watch`: how soon an edit is in the index, and what an idle watcher costs.

Two `jinaloc watch` processes run side by side, each on its own copy of a generated notes
folder, one per --debounce value. Each round edits one note in each folder (order rotated)
and times the write until the index holds the note's new hash (polled every 10 ms on its own
connection, which sees committed state only, as a search would). Then both sit idle while
their CPU time (/proc/PID/stat) and resident memory are read.

Apart, without a model: the cost of planning one touched note (what a watch batch plans)
against planning its whole root (what `index` plans), on --plan-notes indexed notes,
interleaved over rounds.

    python scripts/bench_watch.py [--model DIR|NAME] [--notes 200] [--rounds 10] [--json PATH]

Latency = the wait for quiet (one to two --debounce periods: watchfiles looks every period)
+ applying the batch (planning the touched path, chunk, embed and write: `apply`, from the
batch's --json line). The tiny fixture makes embedding free, so this is the watcher's own
cost; with a real model add one note's embedding time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    ROOT,
    fixtures_dir,
    log,
    machine,
    median,
    parser,
    percentile,
    table,
    write_json,
)

from jinaloc.index.plan import plan_update, sha256
from jinaloc.index.store import Store  # noqa: E402
from jinaloc.walk import WalkOptions  # noqa: E402

DEBOUNCES = (100, 500)
WORDS = ["budget", "hiring", "travel", "roadmap", "release", "garden", "recipes", "reading"]


def make_notes(folder: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = folder / f"topic-{i % 10}" / f"note-{i:04d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        words = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(60))
        path.write_text(f"# Note {i}\n\n{words}\n\n- item {i}\n")
        paths.append(path)
    return paths


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def file_hash(db: Path, path: Path) -> str | None:
    with Store.open(db, create=False) as store:
        record = store.file(str(path))
    return record.hash if record else None


def plan_cost(tmp: Path, n: int, rounds: int) -> dict:
    """Median ms to plan one touched note and the whole root, over `rounds` interleaved."""
    root = (tmp / "plan-notes").resolve()
    notes = make_notes(root, n)
    with Store.open(tmp / "plan.db") as store:
        store.set_meta({"dim": 64})
        for path in notes:  # indexed as they are: size and mtime match, nothing is read
            st = path.stat()
            rel = path.relative_to(root).as_posix()
            h = sha256(path.read_bytes())
            store.write_file(str(path), str(root), rel, h, st.st_size, st.st_mtime_ns, rel, [])
        roots = [(root, WalkOptions())]
        scope = {str(root): [notes[0].relative_to(root).as_posix()]}
        full, one = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            assert plan_update(store, roots).unchanged == n
            full.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert plan_update(store, roots, scope).unchanged == 1
            one.append(time.perf_counter() - t)
    return {
        "notes": n,
        "whole root ms": median(full) * 1000,
        "one touched note ms": median(one) * 1000,
        "ratio": median(full) / median(one),
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model", help="model dir or name (default: the tiny nano fixture)")
    p.add_argument("--backend", default="gguf")
    p.add_argument("--quant", default="F32")
    p.add_argument("--notes", type=int, default=200)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--idle", type=float, default=30.0, help="idle seconds measured")
    p.add_argument("--plan-notes", type=int, default=5000)
    args = p.parse_args()
    if args.quick:
        args.notes, args.rounds, args.idle, args.plan_notes = 20, 3, 3.0, 200
    model = args.model
    if model is None:
        fixtures = fixtures_dir()
        if fixtures is None:
            raise SystemExit("no --model and no tiny fixtures: set JINALOC_FIXTURES")
        model = str(fixtures / "tiny-v5-nano")
    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    plan = plan_cost(tmp, args.plan_notes, max(args.rounds, 5))
    log(table([plan], list(plan)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JINALOC_STATE_DIR": str(tmp / "state")}
    runs = {}
    for debounce in DEBOUNCES:
        folder, db = tmp / f"notes-{debounce}", tmp / f"index-{debounce}.db"
        notes = make_notes(folder, args.notes)
        cmd = [sys.executable, "-m", "jinaloc", "watch", str(folder), "--db", str(db), "-q"]
        cmd += ["--model", model, "--backend", args.backend, "--quant", args.quant, "--json"]
        cmd += ["--debounce", str(debounce)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        if not proc.stdout.readline():  # the catch-up: everything indexed
            raise SystemExit(f"watch --debounce {debounce} failed to start")
        runs[debounce] = {"proc": proc, "db": db, "notes": notes, "latency": [], "apply": []}
    try:
        for r in range(args.rounds):
            order = DEBOUNCES if r % 2 == 0 else DEBOUNCES[::-1]
            for debounce in order:
                run = runs[debounce]
                note = run["notes"][r % len(run["notes"])]
                text = f"# Edited {r}\n\nround {r}: " + " ".join(WORDS[r:] + WORDS[:r]) + "\n"
                want = sha256(text.encode())
                start = time.perf_counter()
                note.write_text(text)
                while file_hash(run["db"], note) != want:
                    if time.perf_counter() - start > 60:
                        raise SystemExit(f"edit not applied in 60 s (debounce {debounce})")
                    time.sleep(0.01)
                run["latency"].append(time.perf_counter() - start)
                batch = json.loads(run["proc"].stdout.readline())  # its --json line
                run["apply"].append(batch["seconds"])
            log(f"round {r + 1}/{args.rounds}", {d: f"{runs[d]['latency'][-1]:.3f}" for d in runs})
        time.sleep(1.0)
        before = {d: cpu_seconds(run["proc"].pid) for d, run in runs.items()}
        time.sleep(args.idle)
        idle = {d: cpu_seconds(run["proc"].pid) - before[d] for d, run in runs.items()}
        rows = [
            {
                "debounce ms": d,
                "median s": median(run["latency"]),
                "p90 s": percentile(run["latency"], 90),
                "max s": max(run["latency"]),
                "apply median s": median(run["apply"]),
                f"idle CPU s / {args.idle:.0f} s": idle[d],
                "RSS MB": rss_mb(run["proc"].pid),
            }
            for d, run in runs.items()
        ]
    finally:
        for run in runs.values():
            run["proc"].terminate()
            run["proc"].wait(30)
    codes = {d: run["proc"].returncode for d, run in runs.items()}
    print(table([plan], list(plan)))
    print(table(rows, list(rows[0])))
    write_json(
        args.json,
        {
            "machine": machine(),
            "model": model,
            "notes": args.notes,
            "rounds": args.rounds,
            "idle_seconds": args.idle,
            "results": rows,
            "plan": plan,
            "latencies": {d: run["latency"] for d, run in runs.items()},
            "apply_seconds": {d: run["apply"] for d, run in runs.items()},
            "exit_codes": codes,
        },
    )
    if any(codes.values()):
        raise SystemExit(f"a watcher did not stop cleanly: {codes}")


if __name__ == "__main__":
    main()

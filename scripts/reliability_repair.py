"""The figures of docs/reliability.md "Repair and ownership", against one source tree.

    python scripts/reliability_repair.py matrix [--notes 200] [--seeds 10]
    python scripts/reliability_repair.py first-runs [--tree DIR] [--trials 8]
    python scripts/reliability_repair.py reindex-kill [--tree DIR]

matrix: every damage of tests/test_repair.py (its own `run_case` and `same_as_clean`) on an
index of --notes notes, --seeds times each; sums of chunks kept, lost, re-embedded.
first-runs: a first `index` with a bad --model started first, a good one 0-0.45 s later, on a
new file; counts what each run said and whether the index file is there, whole.
reindex-kill: `index --reindex` killed (SIGKILL) at fractions of a whole rebuild's time while
searches run; whether the old index is exactly as it was. --tree: the source tree whose
jinaloc the CLI runs (default: this checkout), so a change can be compared with main.
The tiny nano fixture on ONNX is the model of the CLI runs."""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
MODEL = ["--backend", "onnx", "--quant", "fp32"]


def matrix(args) -> None:
    import test_repair as t
    from index_helpers import make_notes

    base = Path(tempfile.mkdtemp())
    notes = base / "notes"
    make_notes(notes, args.notes)
    rows = "\n".join(f"| row {i} | tomato basil {i} |" for i in range(400))
    (notes / "table.md").write_text(
        f"---\naliases: [Big table]\n---\n# Table\n\n| a | b |\n|---|---|\n{rows}\n"
    )
    db = base / "clean.db"
    t.build(notes, db)
    keys = ("chunks", "unreadable", "kept", "lost", "reembedded", "files_to_reembed", "differ")
    for case in t.CASES:
        runs = []
        for seed in range(args.seeds):
            work = base / f"run-{seed}"
            work.mkdir()
            row = t.run_case((notes, db), work, case, seed)
            if not row["refused"]:
                row["differ"] = t.same_as_clean((notes, db), row["db"], row["damaged"])
            runs.append(row)
            shutil.rmtree(work)
        done = [r for r in runs if not r["refused"]]
        sums = {k: sum(r[k] for r in done) for k in keys}
        print(f"{case}: runs {len(runs)}, refused {len(runs) - len(done)}, {sums}")
    shutil.rmtree(base)


def _cli(tree: Path):
    env = {**os.environ, "PYTHONPATH": str(tree)}

    def run(*args, wait=True):
        p = subprocess.Popen(
            [sys.executable, "-m", "jinaloc", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        return p.communicate() + (p.returncode,) if wait else p

    return run


def _model() -> list[str]:
    from conftest import model_dir

    return ["--model", str(model_dir("nano")), *MODEL]


def first_runs(args) -> None:
    from index_helpers import make_notes

    cli = _cli(args.tree)
    base = Path(tempfile.mkdtemp())
    notes = base / "notes"
    make_notes(notes, 80)
    outcomes = collections.Counter()
    for i in range(args.trials):
        db = base / f"t{i}.db"
        bad = cli("index", notes, "--db", db, "--model", base / "no-such-model", wait=False)
        time.sleep((i % 4) * 0.15)
        good = cli("index", notes, "--db", db, *_model(), "--json", wait=False)
        _, _, bad_code = bad.communicate() + (bad.wait(),)
        out, _ = good.communicate()
        files = None
        if db.exists():
            conn = sqlite3.connect(db)
            files = conn.execute("SELECT count(*) FROM files").fetchone()[0]
            conn.close()
        said = good.returncode == 0 and json.loads(out)["added"] == 80
        outcomes[(bad_code, good.returncode, said, db.exists(), files)] += 1
    for (bad_code, good_code, said, exists, files), n in outcomes.items():
        print(
            f"{n}: bad run exit {bad_code}; good run exit {good_code}"
            f"{', said 80 added' if said else ''}; index there: {exists}, files: {files}"
        )
    shutil.rmtree(base)


def reindex_kill(args) -> None:
    from index_helpers import make_notes

    cli = _cli(args.tree)
    base = Path(tempfile.mkdtemp())
    notes = base / "notes"
    make_notes(notes, 150, paragraphs=6)
    db = base / "x.db"

    def snapshot():
        conn = sqlite3.connect(db)
        rows = conn.execute("SELECT id, hash, full FROM chunks ORDER BY id").fetchall()
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        conn.close()
        return rows, meta

    assert cli("index", notes, "--db", db, *_model(), "--dim", "32")[2] == 0
    start = time.monotonic()
    assert cli("index", "--db", db, "--reindex", *_model(), "--dim", "64")[2] == 0
    whole = time.monotonic() - start
    assert cli("index", "--db", db, "--reindex", *_model(), "--dim", "32")[2] == 0
    before = snapshot()
    print(f"a whole rebuild: {whole:.1f} s, {len(before[0])} chunks")
    answered = searches = intact = 0
    fractions = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.95)
    for fraction in fractions:
        p = cli("index", "--db", db, "--reindex", *_model(), "--dim", "64", wait=False)
        start = time.monotonic()
        while time.monotonic() - start < fraction * whole:
            code = cli("search", "tomato basil", "--db", db, "--mode", "lexical", "--json")[2]
            searches += 1
            answered += code == 0
        p.send_signal(signal.SIGKILL)
        p.wait()
        now = snapshot()
        intact += now == before
        print(f"killed at {fraction:.0%}: {len(now[0])} chunks, dim {now[1].get('dim')}")
    print(f"{intact} of {len(fractions)} left the old index whole; {answered}/{searches} answered")
    shutil.rmtree(base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("matrix", "first-runs", "reindex-kill"))
    parser.add_argument("--notes", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--tree", type=Path, default=ROOT)
    args = parser.parse_args()
    {"matrix": matrix, "first-runs": first_runs, "reindex-kill": reindex_kill}[args.what](args)


if __name__ == "__main__":
    main()

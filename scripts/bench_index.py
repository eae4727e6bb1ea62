"""Indexing overhead: end-to-end `jinaloc index` on a generated notes corpus against pure
embedding time of the same chunks, so the cost of walking, chunking and storing is visible.
On a real notes folder (`--corpus DIR --sample N`: N of its notes, picked with a fixed seed)
it also reports the padding of the indexer's passes against one global length sort.

Each round runs, side by side: the CLI on a fresh index (a new process, as a user runs it);
the same process start-up and model load alone (`load`: import, load, embed one text); and
the pure embedding of every chunk text the index stored, in one Embedder call with the model
already loaded. overhead = (index - load - embed) / embed.

    python scripts/bench_index.py [--families nano small] [--files 10] [--json PATH]
    python scripts/bench_index.py --corpus ../corpus-til --sample 150 --backend onnx --quant int8
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
from benchlib import (  # noqa: E402
    ROOT,
    bench_models_dir,
    fixtures_dir,
    log,
    machine,
    median,
    parser,
    table,
    write_json,
)

from jinaloc.chunking import embed_text  # noqa: E402
from jinaloc.embedder import MAX_BATCH_TOKENS, length_sorted_batches  # noqa: E402
from jinaloc.index.store import Store  # noqa: E402
from jinaloc.index.write import STEP_CHUNKS  # noqa: E402
from jinaloc.load import load_embedder  # noqa: E402

TOPICS = """budget hiring travel roadmap release security backup garden recipes reading
fitness taxes meeting research embeddings retrieval onboarding design review"""
SAMPLE = """the note about a meeting with the team on budget planning and next quarter goals
includes several open questions on hiring travel costs software licenses office space and the
new customer onboarding process which should be documented before the review in march while
the research group tests retrieval models embeddings vector search and local inference we
should also remember to water the tomatoes renew the passport and call the accountant"""
LOAD = """
import sys, time
from jinaloc.load import load_embedder
e = load_embedder(sys.argv[1], backend=sys.argv[2], quant=sys.argv[3] or None, offline=True)
e.embed(["warm up"], task="retrieval", dim=int(sys.argv[4]))
"""


def sentence(rng: np.random.Generator) -> str:
    words = rng.choice(SAMPLE.split(), size=int(rng.integers(6, 20)))
    return " ".join(words).capitalize() + "."


def make_corpus(folder: Path, files: int, seed: int = 0) -> int:
    """Markdown notes in a few sub-folders: a title, 1-6 sections, paragraphs and lists."""
    rng = np.random.default_rng(seed)
    topics = TOPICS.split()
    total = 0
    for i in range(files):
        topic = topics[i % len(topics)]
        lines = [f"# {topic.capitalize()} notes {i}", ""]
        for s in range(int(rng.integers(1, 7))):
            lines += [f"## {topic} part {s}", ""]
            for _ in range(int(rng.integers(1, 5))):
                lines += [" ".join(sentence(rng) for _ in range(int(rng.integers(2, 8)))), ""]
            if rng.random() < 0.3:
                lines += [f"- {sentence(rng)}" for _ in range(int(rng.integers(2, 6)))] + [""]
        path = folder / topic / f"note-{i:04d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "\n".join(lines)
        path.write_text(text)
        total += len(text)
    return total


def sample_corpus(source: Path, into: Path, n: int, seed: int = 0) -> int:
    """`n` notes of a real folder, picked with a fixed seed, copied with their sub-folders."""
    notes = sorted(p for p in source.rglob("*.md") if ".git" not in p.parts)
    picked = np.random.default_rng(seed).choice(len(notes), size=min(n, len(notes)), replace=False)
    total = 0
    for i in sorted(picked):
        target = into / notes[i].relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = notes[i].read_bytes()
        target.write_bytes(data)
        total += len(data)
    return total


def padding(
    files: list[list[int]], step: int, batch: int, cap: int, pass_tokens: int | None = None
) -> float:
    """Share of computed tokens that are padding when files' texts (token counts, in file
    order) are embedded `step` chunks at a time, each step length-sorted into batches of at
    most `batch` texts and `cap` padded tokens (as Embedder.embed_raw cuts them), each batch
    run in passes of at most `pass_tokens` (the ONNX backend's PASS_TOKENS) if given."""
    steps, current = [], []
    for counts in files:
        current += counts
        if len(current) >= step:
            steps.append(current)
            current = []
    steps += [current] if current else []
    real = padded = 0
    for lengths in steps:
        for b in length_sorted_batches(lengths, batch, cap):
            sizes = [lengths[i] for i in b]
            whole = [list(range(len(sizes)))]
            passes = length_sorted_batches(sizes, len(b), pass_tokens) if pass_tokens else whole
            for p in passes:
                real += sum(sizes[i] for i in p)
                padded += max(sizes[i] for i in p) * len(p)
    return 1 - real / padded


def chunk_texts(db: Path) -> list[tuple[str, str]]:
    """(file, text) of the exact texts the index embedded: title and heading path, then the
    chunk; files in path order (the walk's)."""
    with Store.open(db, create=False) as store:
        rows = store.conn.execute(
            "SELECT f.path, f.title, c.heading, c.text FROM chunks c"
            " JOIN files f ON f.id = c.file_id ORDER BY f.path, c.seq"
        ).fetchall()
    return [(p, embed_text(t, json.loads(h), x)) for p, t, h, x in rows]


def steps_variant(step: int, into: Path) -> Path:
    """This tree's package with the indexer's STEP_CHUNKS set to `step`: the same code
    otherwise, to time the step size alone."""
    shutil.copytree(ROOT / "jinaloc", into / "jinaloc")
    shutil.copy(ROOT / "models.toml", into / "models.toml")
    write = into / "jinaloc" / "index" / "write.py"
    text = write.read_text()
    write.write_text(text.replace(f"STEP_CHUNKS = {STEP_CHUNKS}\n", f"STEP_CHUNKS = {step}\n", 1))
    return into


def run(cmd: list[str], tree: Path = ROOT) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    dt = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return dt, out.stdout


def bench_family(family: str, folder: Path, corpus: Path, workdir: Path, args) -> dict:
    model, backend, quant, dim = str(folder), args.backend, args.quant, args.dim
    embedder = load_embedder(model, backend=backend, quant=quant, offline=True)
    embedder.embed(["warm up"], task="retrieval", dim=dim)
    index_s, load_s, embed_s, reports, variant_s = [], [], [], [], []
    texts: list[str] = []
    files: list[str] = []
    for r in range(args.rounds):
        db = workdir / f"{family}-{r}.db"
        other = workdir / f"{family}-{r}-variant.db"  # the variant's own file

        def index_cmd(path: Path) -> list[str]:
            cmd = [sys.executable, "-m", "jinaloc", "index", str(corpus), "--db", str(path)]
            cmd += ["--model", model, "--backend", backend, "--dim", str(dim), "--json", "-q"]
            return cmd + (["--quant", quant] if quant else [])

        # With --compare-step, the variant goes first in even rounds, second in odd ones.
        order = [[True, False], [False, True]][r % 2] if args.compare_step else [False]
        for variant in order:
            if variant:
                dt, _ = run(index_cmd(other), args.variant)
                variant_s.append(dt)
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{other}{suffix}").unlink(missing_ok=True)
            else:
                dt, kept = run(index_cmd(db))
                index_s.append(dt)
        reports.append(json.loads(kept))
        files, texts = map(list, zip(*chunk_texts(db), strict=True))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        dt, _ = run([sys.executable, "-c", LOAD, model, backend, quant or "", str(dim)])
        load_s.append(dt)
        t = time.perf_counter()
        embedder.embed(texts, task="retrieval", prompt="document", dim=dim)
        embed_s.append(time.perf_counter() - t)
        log(
            f"{family} round {r + 1}: index {index_s[-1]:.1f} s, load {load_s[-1]:.1f} s,"
            f" embed {embed_s[-1]:.1f} s"
        )
    counts = embedder.count_tokens(texts, "document")
    tokens = sum(counts)
    embedder.close()
    by_file: dict[str, list[int]] = {}
    for path, n in zip(files, counts, strict=True):
        by_file.setdefault(path, []).append(n)
    cap = None
    if backend == "onnx":
        from jinaloc.backends.onnx import PASS_TOKENS

        cap = min(PASS_TOKENS.values())
    files = list(by_file.values())
    pad = {f"steps of {s}": padding(files, s, 32, MAX_BATCH_TOKENS, cap) for s in (32, STEP_CHUNKS)}
    pad["one global sort"] = padding([counts], len(counts), 32, MAX_BATCH_TOKENS, cap)
    index, load, embed = median(index_s), median(load_s), median(embed_s)
    rounds = list(zip(index_s, load_s, embed_s, strict=True))
    report = reports[-1]
    return {
        "family": family,
        "backend": backend,
        "quant": quant,
        "dim": dim,
        "files": report["added"],
        "padding": pad,
        "chunks": len(texts),
        "tokens": tokens,
        "rounds": args.rounds,
        "index_s": index,
        "load_s": load,
        "embed_s": embed,
        "indexer_run_s": median([r["seconds"] for r in reports]),
        "embed_tok_per_s": tokens / embed,
        "index_tok_per_s": tokens / index,
        # Per round (the three runs were seconds apart), then the median.
        "overhead": median([(i - lo - e) / e for i, lo, e in rounds]),
        "overhead_with_load": median([(i - e) / e for i, _, e in rounds]),
        "overhead_of_medians": (index - load - embed) / embed,
        # Steps of --compare-step chunks, same code otherwise (None: not run).
        "variant_index_s": median(variant_s) if variant_s else None,
        "variant_overhead": (
            median([(v - lo - e) / e for v, (_, lo, e) in zip(variant_s, rounds, strict=True)])
            if variant_s
            else None
        ),
        "index_s_all": index_s,
        "load_s_all": load_s,
        "embed_s_all": embed_s,
    }


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, help="folder with bench-v5-nano/ and bench-v5-small/")
    p.add_argument("--families", nargs="+", default=["nano", "small"])
    p.add_argument("--files", type=int, default=10, help="notes in the generated corpus")
    p.add_argument("--corpus", type=Path, help="a real notes folder instead of generated notes")
    p.add_argument("--sample", type=int, default=150, help="notes taken from --corpus")
    p.add_argument(
        "--compare-step", type=int, help="also index with the Writer's steps of this many chunks"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backend", default="gguf")
    p.add_argument("--quant", default="Q8_0", help="GGUF quant, or MLX fp32/q8/q4")
    p.add_argument("--dim", type=int, default=512)
    args = p.parse_args()
    if args.quick:
        args.files, args.rounds, args.dim, args.families = 3, 1, 32, args.families[:1]
        fixtures = fixtures_dir()
        if fixtures is None:
            raise SystemExit("--quick needs the tiny fixtures: set JINALOC_FIXTURES")
        folders = {f: fixtures / f"tiny-v5-{f}" for f in args.families}
    else:
        base = args.models or bench_models_dir()
        folders = {f: base / f"bench-v5-{f}" for f in args.families}
    rows = []
    with tempfile.TemporaryDirectory(prefix="jinaloc-bench-index-") as tmp:
        corpus = Path(tmp) / "notes"
        if args.corpus:
            size = sample_corpus(args.corpus.expanduser(), corpus, args.sample)
            log(f"corpus: {args.sample} notes of {args.corpus}, {size / 1e3:.0f} kB")
        else:
            size = make_corpus(corpus, args.files)
            log(f"corpus: {args.files} files, {size / 1e3:.0f} kB")
        if args.compare_step:
            args.variant = steps_variant(args.compare_step, Path(tmp) / "variant")
        for family, folder in folders.items():
            rows.append(bench_family(family, folder, corpus, Path(tmp), args))
    cols = ["family", "quant", "files", "chunks", "tokens", "index_s", "load_s", "embed_s"]
    extra = ["variant_index_s", "variant_overhead"] if args.compare_step else []
    print(table(rows, cols + ["embed_tok_per_s", "overhead", "overhead_with_load", *extra]))
    targets = [
        {
            "target": f"{r['family']} indexing overhead over pure embedding <= 0.10",
            "value": r["overhead"],
            "met": r["overhead"] <= 0.10,
        }
        for r in rows
    ]
    for r in rows:
        shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["padding"].items())
        print(f"- {r['family']} padding of the passes: {shares}")
    for t in targets:
        print(f"- {t['target']}: {t['value']:.3f} ({'met' if t['met'] else 'MISSED'})")
    write_json(
        args.json,
        {
            "machine": machine(),
            "args": vars(args),
            "corpus_bytes": size,
            "results": rows,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()

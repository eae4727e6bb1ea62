"""A warm `jinaloc search` through `jinaloc serve` against today's cold process.

Builds a small index, starts `jinaloc serve` on it, then runs per round, order alternating:
`jinaloc search Q --db DB --json --no-server` (cold: a new process loads the model), the
same command without --no-server (warm: the server runs the whole search, the process
loads no numpy and no model), `jinaloc --help`, and the floors: `python -c pass` and one
/v1/search request from this process (no process start). Outputs of cold and warm are
checked byte-identical. Then `python -X importtime` of the warm command shows how much of
what remains is Python start-up and imports, and whether it loaded numpy (and the same for
`--help`, and for both in the --before tree).

    python scripts/bench_serve.py [--model DIR|NAME] [--backend gguf|onnx] [--quant F32]
                                  [--rounds 15] [--threads 1] [--json PATH] [--quick]

Default model: the full-size random-weight nano from make_bench_models.py when present
(its GGUF Q8_0 when made, else ONNX int8), else the tiny fixture (GGUF F32).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

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
    tree_of,
    write_json,
)

QUERY = "how do I renew the passport before the trip"
# Every process runs here: `python -m jinaloc` imports the package of its working directory
# first, which must be neither tree (PYTHONPATH says which).
OUTSIDE = tempfile.gettempdir()
SAMPLE = """the note about a meeting with the team on budget planning and next quarter goals
hiring travel costs software licenses office space customer onboarding review march research
retrieval models embeddings vector search local inference water tomatoes passport accountant"""


def default_model(backend: str | None = None) -> tuple[str, str, str | None]:
    """(model folder, backend, quant): the full-size nano when made (for `backend`, else
    its GGUF when made, else ONNX), else the tiny fixture (GGUF F32)."""
    bench = bench_models_dir() / "bench-v5-nano"
    if backend in (None, "gguf") and (bench / "gguf").is_dir():
        quant = "Q8_0" if any((bench / "gguf").glob("*Q8_0.gguf")) else "F16"
        return str(bench), "gguf", quant
    if backend in (None, "onnx") and (bench / "model.safetensors").is_file():
        return str(bench), "onnx", None  # its int8 graph, built into the cache once
    return str(fixtures_dir() / "tiny-v5-nano"), "gguf", "F32"


def make_notes(folder: Path, n: int) -> None:
    import random

    rng = random.Random(0)
    words = SAMPLE.split()
    for i in range(n):
        body = [f"# Note {i}", ""] + [
            " ".join(rng.choice(words) for _ in range(40)) for _ in range(3)
        ]
        (folder / f"note-{i:03d}.md").write_text("\n\n".join(body) + "\n")


def env_for(state: Path, threads: int) -> dict:
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        JINALOC_STATE_DIR=str(state),
        JINALOC_THREADS=str(threads),
    )
    env.pop("JINALOC_NO_SERVER", None)
    return env


def run(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process, stdout). On a busy machine the CPU time
    says what the command costs; the wall time also holds the wait for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=True, cwd=OUTSIDE
    ).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, out


def start_server(cmd: list[str], env: dict, state: Path) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=OUTSIDE
    )
    deadline = time.monotonic() + 600
    while not list((state / "servers").glob("server-*.json")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"serve did not start: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    record = json.loads(next((state / "servers").glob("server-*.json")).read_text())
    return proc, record


def http_search(url: str) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = json.dumps({"query": QUERY, "k": 10}).encode()
    start = time.perf_counter()
    request = urllib.request.Request(url + "/v1/search", data, method="POST")
    with opener.open(request, timeout=60) as response:
        response.read()
    return time.perf_counter() - start


def import_times(cmd: list[str], env: dict) -> dict:
    """Import time (ms) of the whole command, from `python -X importtime`: its total, the
    modules it imported at top level (cumulative), and every module's own time summed by
    package (`self_ms`: where the time goes, at whatever depth a package was imported);
    and whether numpy and pydantic were imported at all."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd[1:]],
        env=env,
        capture_output=True,
        text=True,
        cwd=OUTSIDE,
    )
    top: dict[str, float] = {}
    own: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue
        name = fields[2].rstrip()
        root = name.strip().split(".")[0]
        own[root] = own.get(root, 0) + int(fields[0]) / 1000
        if name.startswith(" ") and not name.startswith("  "):  # imported at top level
            top[root] = top.get(root, 0) + int(fields[1]) / 1000

    def ranked(times: dict[str, float]) -> dict[str, float]:
        return {k: round(v, 1) for k, v in sorted(times.items(), key=lambda kv: -kv[1])[:10]}

    return {
        "total_ms": round(sum(top.values()), 1),
        "top_ms": ranked(top),
        "self_ms": ranked(own),
        "numpy_loaded": "numpy" in own,
        "pydantic_loaded": "pydantic" in own,
    }


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--model")
    p.add_argument("--backend")
    p.add_argument("--quant")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--notes", type=int, default=50)
    p.add_argument(
        "--threads", type=int, default=1, help="JINALOC_THREADS for every process (busy machine: 1)"
    )
    p.add_argument(
        "--before",
        help="git revision whose CLI runs the warm search and --help too, against the same server",
    )
    args = p.parse_args()
    model, backend, quant = default_model(args.backend)
    if args.model:
        model, backend, quant = args.model, "gguf", None
    if args.backend and args.backend != backend:
        backend, quant = args.backend, None  # that backend's default quant
    quant = args.quant or quant
    rounds = 3 if args.quick else args.rounds
    py = sys.executable
    model_args = ["--model", model, "--backend", backend, *(["--quant", quant] if quant else [])]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        notes, db, state = tmp / "notes", tmp / "index.db", tmp / "state"
        notes.mkdir()
        make_notes(notes, 10 if args.quick else args.notes)
        env = env_for(state, args.threads)
        jl = [py, "-m", "jinaloc"]
        run([*jl, "index", str(notes), "--db", str(db), *model_args, "--no-server", "-q"], env)
        proc, record = start_server(
            [*jl, "serve", "--port", "0", "--db", str(db), *model_args], env, state
        )
        try:
            search = [*jl, "search", QUERY, "--db", str(db), "--json"]
            commands = {
                "cold": ([*search, "--no-server"], env),
                "warm": (search, env),
                "--help": ([*jl, "--help"], env),
                "python -c pass": ([py, "-c", "pass"], env),
            }
            if args.before:  # its CLI, this server
                old = {**env, "PYTHONPATH": str(tree_of(args.before, tmp / "before"))}
                commands["warm (before)"] = (search, old)
                commands["--help (before)"] = ([*jl, "--help"], old)
            times: dict[str, list[float]] = {name: [] for name in [*commands, "http"]}
            cpu: dict[str, list[float]] = {name: [] for name in commands}
            outputs: dict[str, set[str]] = {"cold": set(), "warm": set(), "warm (before)": set()}
            for cmd, cmd_env in commands.values():  # warm-up: page cache, .pyc files
                run(cmd, cmd_env)
            for r in range(rounds):
                order = list(commands) if r % 2 == 0 else list(reversed(commands))
                for name in order:
                    seconds, cpu_seconds, out = run(*commands[name])
                    times[name].append(seconds)
                    cpu[name].append(cpu_seconds)
                    if name in outputs:
                        outputs[name].add(out)
                times["http"].append(http_search(record["url"]))
            assert len(outputs["cold"]) == 1, outputs
            for name in ("warm", "warm (before)"):
                assert name not in commands or outputs[name] == outputs["cold"], (name, outputs)
            imports = {  # the median run of three by total, per command
                name: sorted(
                    (import_times(*commands[name]) for _ in range(3)), key=lambda t: t["total_ms"]
                )[1]
                for name in ("warm", "warm (before)", "--help", "--help (before)")
                if name in commands
            }
        finally:
            proc.terminate()
            proc.wait(30)
    rows = [
        {
            "run": name,
            "median_ms": median(ts) * 1000,
            "min_ms": min(ts) * 1000,
            "cpu_median_ms": median(cpu[name]) * 1000 if name in cpu else None,
        }
        for name, ts in times.items()
    ]
    results = {
        "command": " ".join(["python scripts/bench_serve.py", *sys.argv[1:]]),
        "machine": machine(),
        "model": model,
        "backend": backend,
        "quant": quant,
        "threads": args.threads,
        "rounds": rounds,
        "rows": rows,
        "speedup_cold_over_warm": median(times["cold"]) / median(times["warm"]),
        "cpu_ratio_cold_over_warm": median(cpu["cold"]) / median(cpu["warm"]),
        "imports": imports,
    }
    print(table(rows, ["run", "median_ms", "min_ms", "cpu_median_ms"]))
    print(
        f"cold / warm: {results['speedup_cold_over_warm']:.1f}x wall,"
        f" {results['cpu_ratio_cold_over_warm']:.1f}x CPU"
    )
    for name, got in imports.items():
        print(f"imports of {name}: {json.dumps(got)}")
    log(f"load average: {results['machine']['load_avg_1_5_15']}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()

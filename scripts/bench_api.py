"""`--backend api`: does jinaloc's client keep an embeddings server busy?

Starts `jinaloc serve` on a model, then per round, order alternating:
- the server's own throughput: the same requests jinaloc would send (same batches, same
  JSON), built beforehand and posted by N threads on kept-alive connections, answers read
  but not decoded (the floor: nothing but HTTP on the client side);
- `Embedder.embed` through `--backend api` with N requests in flight (tokenizing, batching,
  JSON, decoding, Matryoshka);
- `jinaloc index` of the same texts as notes through the server (chunking, SQLite writes).
Client overhead = 1 - client tok/s / server tok/s (wall clock; client and server share this
machine's CPUs, so the client's own CPU time is counted against it). Since wall clock is noisy
on a busy machine, each phase also records CPU seconds of the server process and of this
process (the client: its request threads included): the client's CPU per token against the
server's is the overhead a dedicated server would see.

    python scripts/bench_api.py [--model DIR] [--texts 256] [--words 80] [--jobs 4]
                                [--batch-size 32] [--rounds 3] [--backend onnx] [--json PATH]
                                [--quick]

Default model: a full-size nano-shaped random-weight folder made here with numpy (12 x 768,
FFN 3072, the fixture's tokenizer; about 230 MB of float16, in $JINALOC_BENCH_MODELS), served
by the ONNX backend (int8); --quick: the tiny fixture on GGUF F32.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
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

# The real nano's shape (REFERENCE.md); the fixture's 64 / 128 / 2 layers / r=4 scaled up.
NANO_SHAPE = {64: 768, 128: 3072}
NANO_CONFIG = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=12,
    max_position_embeddings=8192,
)
SAMPLE = """meeting budget planning quarter goals hiring travel costs software licenses office
space customer onboarding review march research retrieval models embeddings vector search
local inference water tomatoes passport accountant garden compost train ticket museum"""
WORDS = SAMPLE.split()


def _read_header(path: Path) -> tuple[dict, int]:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), n


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, offset = {}, 0
    for name, arr in tensors.items():
        header[name] = {
            "dtype": "F16",
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for arr in tensors.values():
            f.write(np.ascontiguousarray(arr).tobytes())


def make_full_nano(out: Path) -> Path:
    """The fixture nano scaled to the real nano's shape, random float16 weights, with a
    retrieval LoRA of r=32: the cost per token of the real model."""
    if (out / "model.safetensors").is_file():
        return out
    tiny = fixtures_dir() / "tiny-v5-nano"
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "config_sentence_transformers.json"):  # fmt: skip
        (out / name).write_bytes((tiny / name).read_bytes())
    config = json.loads((tiny / "config.json").read_text())
    layers = config["num_hidden_layers"]
    config.update(NANO_CONFIG, torch_dtype="float16")
    (out / "config.json").write_text(json.dumps(config, indent=2))

    def scaled(shape, r=None):
        return [r if (r and d == 4) else NANO_SHAPE.get(d, d) for d in shape]

    def tensor(name, shape):
        if name.endswith("norm.weight"):
            return np.ones(shape, np.float16)
        return (rng.standard_normal(shape, np.float32) * 0.02).astype(np.float16)

    header, _ = _read_header(tiny / "model.safetensors")
    tensors = {}
    for i in range(NANO_CONFIG["num_hidden_layers"]):
        for name, info in header.items():
            if name == "__metadata__" or (name.startswith("layers.") and name.split(".")[1] != "0"):
                continue
            new = name.replace("layers.0.", f"layers.{i}.") if name.startswith("layers.") else name
            if i and not name.startswith("layers."):
                continue
            tensors[new] = tensor(new, scaled(info["shape"]))
    _write_safetensors(out / "model.safetensors", tensors)
    adapter = out / "adapters" / "retrieval"
    adapter.mkdir(parents=True, exist_ok=True)
    config = json.loads((tiny / "adapters/retrieval/adapter_config.json").read_text())
    config.update(r=32, lora_alpha=32)
    (adapter / "adapter_config.json").write_text(json.dumps(config, indent=2))
    header, _ = _read_header(tiny / "adapters/retrieval/adapter_model.safetensors")
    lora = {}
    for i in range(NANO_CONFIG["num_hidden_layers"]):
        for name, info in header.items():
            if name == "__metadata__" or f".layers.{0}." not in name:
                continue
            lora[name.replace(".layers.0.", f".layers.{i}.")] = tensor(
                name, scaled(info["shape"], 32)
            )
    _write_safetensors(adapter / "adapter_model.safetensors", lora)
    log(f"made {out} ({layers} -> {NANO_CONFIG['num_hidden_layers']} layers)")
    return out


def make_texts(n: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 2, words))) for _ in range(n)
    ]


class Serve:
    def __init__(self, model: str, backend: str, quant: str | None, state: Path):
        args = [sys.executable, "-m", "jinaloc", "serve", "--port", "0", "--model", model]
        args += ["--backend", backend] + (["--quant", quant] if quant else [])
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JINALOC_STATE_DIR": str(state)}
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 600
        while not list((state / "servers").glob("server-*.json")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"serve did not start: {self.proc.stderr.read()}")
            time.sleep(0.1)
        record = json.loads(next((state / "servers").glob("server-*.json")).read_text())
        self.url = record["url"]

    def cpu(self) -> float:
        """CPU seconds (user + system) the server process has used."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def raw_throughput(url: str, bodies: list[bytes], jobs: int) -> float:
    """Seconds for N threads to post `bodies` on kept-alive connections, answers unread."""
    parts = urlsplit(url)
    todo = list(range(len(bodies)))
    lock = threading.Lock()

    def work():
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        while True:
            with lock:
                if not todo:
                    break
                i = todo.pop(0)
            conn.request("POST", "/v1/embeddings", bodies[i], {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise SystemExit(f"HTTP {response.status}: {data[:300]}")
        conn.close()

    threads = [threading.Thread(target=work) for _ in range(jobs)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: full-size random nano, made here)")
    p.add_argument("--backend", default=None)
    p.add_argument("--quant", default=None)
    p.add_argument("--texts", type=int, default=256)
    p.add_argument("--words", type=int, default=80)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32, help="texts per request")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if args.quick:
        model = str(fixtures_dir() / "tiny-v5-nano")
        backend = args.backend or "gguf"
        quant = args.quant or ("F32" if backend == "gguf" else None)
        args.texts, args.rounds = min(args.texts, 64), 1
    else:
        model = args.model or str(make_full_nano(bench_models_dir() / "api-v5-nano-f16"))
        backend, quant = args.backend or "onnx", args.quant

    from jinaloc.backends.api import APISettings, open_api
    from jinaloc.embedder import length_sorted_batches
    from jinaloc.index import Index
    from jinaloc.registry import resolve

    texts = make_texts(args.texts, args.words)
    tmp = Path(tempfile.mkdtemp(prefix="bench_api-"))
    notes = tmp / "notes"
    notes.mkdir()
    for i, t in enumerate(texts):  # one chunk per note (under 512 tokens)
        (notes / f"n{i:04d}.md").write_text(t + "\n")
    log(f"starting jinaloc serve on {model} ({backend} {quant or ''})")
    server = Serve(model, backend, quant, tmp / "state")
    rows = []
    try:
        settings = APISettings(url=server.url, kind="jina", jobs=args.jobs)
        e = open_api(resolve(model), settings)
        counts = e.count_tokens(texts, "document")
        tokens = sum(counts)
        batches = length_sorted_batches(counts, args.batch_size, settings.batch_tokens)
        bodies = [
            json.dumps(
                {
                    "input": [texts[i] for i in b],
                    "task": "retrieval.passage",
                    "embedding_type": "base64",
                    "normalized": True,
                    "truncate": True,
                    "model": e.client.model_for("retrieval"),
                }
            ).encode()  # fmt: skip
            for b in batches
        ]
        e.embed(texts[:8])  # warm up the server and the client
        raw_throughput(server.url, bodies[:2], 2)

        def index_once():
            db = tmp / f"i{time.perf_counter_ns()}.db"
            loader = lambda *a, task=None: open_api(resolve(model), settings)  # noqa: E731
            start = time.perf_counter()
            with Index.open(db, create=True, loader=loader) as idx:
                idx.use_model(model, "api")
                report = idx.update([notes])  # STEP_CHUNKS texts a request
            seconds = time.perf_counter() - start
            assert report.chunks_embedded >= len(texts) and not report.failed, report.to_json()
            return report.tokens, seconds

        for r in range(args.rounds):
            order = ["raw", "embed", "index"] if r % 2 == 0 else ["index", "embed", "raw"]
            for what in order:
                server_cpu, client_cpu = server.cpu(), time.process_time()
                if what == "raw":
                    seconds, n = raw_throughput(server.url, bodies, args.jobs), tokens
                elif what == "embed":
                    start = time.perf_counter()
                    e.embed(texts, batch_size=args.batch_size)
                    seconds, n = time.perf_counter() - start, tokens
                else:
                    n, seconds = index_once()
                server_cpu = server.cpu() - server_cpu
                client_cpu = time.process_time() - client_cpu
                rows.append({"round": r, "what": what, "tokens": n, "seconds": seconds,
                             "tok_s": n / seconds, "server_cpu_s": server_cpu,
                             "client_cpu_s": client_cpu,
                             "client_cpu_share": client_cpu / server_cpu})  # fmt: skip
                log(
                    f"round {r} {what}: {n / seconds:,.0f} tok/s ({seconds:.2f} s);"
                    f" CPU server {server_cpu:.2f} s, client {client_cpu:.2f} s"
                )
        e.close()
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summary, cpu_share = {}, {}
    for what in ("raw", "embed", "index"):
        summary[what] = median([row["tok_s"] for row in rows if row["what"] == what])
        cpu_share[what] = median([row["client_cpu_share"] for row in rows if row["what"] == what])
    overhead = {w: 1 - summary[w] / summary["raw"] for w in ("embed", "index")}
    columns = ["round", "what", "tokens", "seconds", "tok_s", "server_cpu_s", "client_cpu_s"]
    print(table(rows, [*columns, "client_cpu_share"]))
    print(f"\nmedian tok/s: {summary}; wall overhead: {overhead};")
    print(f"client CPU / server CPU: {cpu_share}")
    write_json(
        args.json,
        {
            "machine": machine(),
            "model": model,
            "backend": backend,
            "quant": quant,
            "texts": args.texts,
            "tokens": tokens,
            "requests": len(bodies),
            "jobs": args.jobs,
            "rows": rows,
            "batch_size": args.batch_size,
            "median_tok_s": summary,
            "client_overhead": overhead,
            "client_cpu_share": cpu_share,
        },
    )


if __name__ == "__main__":
    main()

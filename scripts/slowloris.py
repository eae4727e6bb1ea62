"""Legitimate requests to `jinaloc serve` while a slowloris holds N connections open.

Starts `jinaloc serve` (from each source tree given, one after the other) on the tiny
fixture model, then per tree:
  1. baseline: POST /v1/embeddings {"input": "a"} one after another for --seconds;
  2. attack: N connections to 127.0.0.1 that send a request's headers one byte per
     --interval seconds (reconnecting when the server closes one), and after --warmup
     seconds the same legitimate requests for --seconds while the attack goes on.
Reports per phase: requests, answered 200, other outcomes, p50/p99 latency of all of them.

Only loopback: the attack never leaves this machine, and is bounded (N <= 2000,
--seconds <= 300). `--token`: the server listens on 0.0.0.0 with a token (attacked and
called on 127.0.0.1), as `serve --host ... --token` runs.

    python scripts/slowloris.py [--trees /work/main .] [--connections 300] [--seconds 20]
                                [--interval 1] [--warmup 5] [--token] [--json PATH]
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, fixtures_dir, log, machine, parser, percentile, table, write_json  # noqa: E402

HEAD = b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 60_000
TOKEN = "slowloris-bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tree: Path, state: Path, token: bool, log_file) -> tuple[subprocess.Popen, int]:
    model = fixtures_dir() / "tiny-v5-nano"
    port = free_port()
    host = ["--host", "0.0.0.0", "--token", TOKEN] if token else []
    env = {**os.environ, "PYTHONPATH": str(tree), "JINALOC_STATE_DIR": str(state)}
    env.update(HF_HUB_OFFLINE="1", JINALOC_NO_SERVER="1")
    args = ["--model", str(model), "--backend", "gguf", "--quant", "F32", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "jinaloc", "serve", *host, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,  # a file: a pipe nobody reads would block a server that logs a lot
        cwd=tree,
    )
    deadline = time.monotonic() + 120
    while not list((state / "servers").glob("*.json")):
        if proc.poll() is not None or time.monotonic() > deadline:
            log_file.seek(0)
            raise SystemExit(f"serve from {tree} did not start: {log_file.read()[-2000:]}")
        time.sleep(0.1)
    return proc, port


def legit(port: int, seconds: float, token: bool) -> dict:
    """Requests one after another, each on a new connection (as the CLI makes them)."""
    body = json.dumps({"input": "a"})
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {TOKEN}"
    times, outcomes = [], Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/v1/embeddings", body, headers)
            outcome = str(conn.getresponse().status)
            conn.close()
        except OSError as e:
            outcome = type(e).__name__
        times.append(time.perf_counter() - started)
        outcomes[outcome] += 1
    return {
        "requests": len(times),
        "ok": outcomes.get("200", 0),
        "other": {k: v for k, v in outcomes.items() if k != "200"},
        "p50_ms": round(percentile(times, 50) * 1000, 1),
        "p99_ms": round(percentile(times, 99) * 1000, 1),
    }


class Attack:
    """N connections dripping header bytes, one per connection per `interval` seconds."""

    def __init__(self, port: int, n: int, interval: float):
        self.port, self.interval = port, interval
        self.stop = threading.Event()
        self.opened = self.closed = self.refused = 0
        self.socks: list[tuple[socket.socket | None, int]] = [(self._open(), 0) for _ in range(n)]
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _open(self) -> socket.socket | None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.refused += 1
            return None
        s.setblocking(False)
        self.opened += 1
        return s

    def _drip(self) -> None:
        while not self.stop.wait(self.interval):
            for i, (s, sent) in enumerate(self.socks):
                if s is not None:
                    try:
                        s.send(HEAD[sent : sent + 1])
                        self.socks[i] = (s, sent + 1)
                        continue
                    except OSError:
                        s.close()
                        self.closed += 1
                self.socks[i] = (self._open(), 0)

    def close(self) -> dict:
        self.stop.set()
        self.thread.join(30)
        for s, _ in self.socks:
            if s is not None:
                s.close()
        return {"opened": self.opened, "closed_by_server": self.closed, "refused": self.refused}


def run_tree(tree: Path, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "serve.log", "w+") as log_file:
        proc, port = start_server(tree, Path(tmp) / "state", args.token, log_file)
        try:
            legit(port, 2, args.token)  # warm
            base = legit(port, args.seconds, args.token)
            attack = Attack(port, args.connections, args.interval)
            time.sleep(args.warmup)
            during = legit(port, args.seconds, args.token)
            churn = attack.close()
            alive = proc.poll() is None
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"tree": str(tree), "baseline": base, "attack": during, "churn": churn, "alive": alive}


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--trees", nargs="+", type=Path, default=[ROOT])
    p.add_argument("--connections", type=int, default=300)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--token", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.connections, args.seconds, args.warmup = 50, 3, 1
    if not 1 <= args.connections <= 2000 or not 0 < args.seconds <= 300:
        raise SystemExit("--connections 1..2000 and --seconds up to 300")
    if fixtures_dir() is None:
        raise SystemExit("needs the tiny fixture models (JINALOC_FIXTURES)")
    runs = []
    for tree in args.trees:
        log(f"{tree}: {args.connections} slow connections, {args.seconds:g} s per phase")
        runs.append(run_tree(tree.resolve(), args))
    rows = [
        {"tree": r["tree"], "phase": phase, **{k: r[phase][k] for k in ("requests", "ok")},
         "other": json.dumps(r[phase]["other"]), "p50 ms": r[phase]["p50_ms"],
         "p99 ms": r[phase]["p99_ms"], "alive": r["alive"]}
        for r in runs for phase in ("baseline", "attack")
    ]  # fmt: skip
    print(table(rows, ["tree", "phase", "requests", "ok", "other", "p50 ms", "p99 ms", "alive"]))
    settings = {k: getattr(args, k) for k in ("connections", "seconds", "interval", "warmup")}
    write_json(
        args.json, {"machine": machine(), "settings": {**vars(args), **settings}, "runs": runs}
    )


if __name__ == "__main__":
    main()
